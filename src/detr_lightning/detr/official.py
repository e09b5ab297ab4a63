"""Official facebookresearch/detr checkpoints: reading and loading (key mapping:
:mod:`~detr_lightning.detr.official_keys`).

A release file is ``{"model": state_dict}`` with keys such as ``backbone.0.body.layer1.0.conv1.weight``
(ResNet trunk), ``backbone.1.row_embed.weight`` (learned position encoding, if any),
``transformer.encoder.layers.0.self_attn.in_proj_weight``, ``class_embed.weight``,
``bbox_embed.layers.0.weight``, ``query_embed.weight`` and ``input_proj.weight``.
A panoptic release file (``detr-r50-panoptic-00ce5173.pth``) holds the same keys under ``detr.``
beside its mask head's, the layout of :class:`~detr_lightning.detr.segmentation.DETRsegm`.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import torch
from torch import Tensor, nn

from detr_lightning.detr.class_scoring import scoring_of
from detr_lightning.detr.model import build_detr
from detr_lightning.detr.official_keys import (
    DETR_PREFIX,
    MASK_PARTS,
    convert_official_state_dict,
    infer_official_config,
    is_panoptic,
    split_panoptic,
)
from detr_lightning.detr.segmentation import DETRsegm, detector_of
from detr_lightning.detr.state_dicts import (
    CLASS_HEAD,
    class_count_keys,
    listing,
    num_classes,
    state_dict_differences,
)

# Re-exported: the key mapping's public names have always been imported from here.
__all__ = [
    "convert_official_state_dict",
    "infer_official_config",
    "is_panoptic",
    "load_official_detr",
    "load_pretrained_into",
    "load_state_dict_into",
    "read_official_state_dict",
    "release_state_dict",
    "split_panoptic",
]

log = logging.getLogger(__name__)


def read_official_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load the official state dict from ``path`` with ``weights_only=True`` (on CPU)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DETR checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: not loadable with weights_only=True ({err}). Training checkpoints of the "
            "official code also pickle argparse args; if you trust the file, re-save only the "
            "weights: torch.save({'model': torch.load(p, weights_only=False)['model']}, new_p)"
        ) from err
    except (RuntimeError, EOFError) as err:  # torch's zip reader on a truncated/corrupt file
        raise ValueError(
            f"{path}: not a readable torch file ({str(err).splitlines()[0]}); it is probably "
            "truncated or corrupt: download the release again and compare its size."
        ) from err
    return release_state_dict(obj, path)


def release_state_dict(content: Any, source: str) -> dict[str, Tensor]:
    """The official state dict of a release file's loaded ``content`` (``{"model": state_dict}``
    or the state dict itself); ValueError starting with ``source`` (the file, as the caller
    names it) when it is neither."""
    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        content = content["model"]
    if not isinstance(content, dict) or not (CLASS_HEAD in content or is_panoptic(content)):
        raise ValueError(
            f"{source}: expected an official DETR file {{'model': state_dict}} with a "
            "'class_embed.weight' (panoptic: 'detr.class_embed.weight') entry; got something else"
        )
    return content


def _load_converted(model: nn.Module, sd: dict[str, Tensor], path: str) -> dict[str, Any]:
    """Load a converted state dict (detection or panoptic) into a DETR or a DETRsegm.

    A detection file into a DETRsegm fills its detector and keeps the mask head as initialised
    (the paper's second training stage); a panoptic file into a DETR loads the detector part.
    """
    segm = isinstance(model, DETRsegm)
    detector, mask_part = split_panoptic(sd)
    net = detector_of(model)
    own_detector = net.state_dict()
    release_classes = num_classes(detector)  # official releases score with the softmax
    skipped, unused, fresh = [] if segm else sorted(mask_part), [], []
    # An extension of the paper's model names the release's tensors in its own terms, and lists
    # its own parameters that no release holds (they keep their initialisation).
    adapt = getattr(net, "adapt_official_state_dict", None)
    if adapt is not None:
        detector, unused, fresh = adapt(detector)
        skipped += unused
    # The fine-tuning path: a new label set gets a fresh class head (and fresh per-class
    # tables), everything else loads.
    reinitialized = class_count_keys(detector, own_detector)
    if not scoring_of(net).no_object:
        # A release's head was trained for the softmax; under another scoring its logits mean
        # something else, even where the row counts happen to agree.
        head = {k for k in (CLASS_HEAD, "class_embed.bias") if k in detector and k in own_detector}
        reinitialized = sorted(set(reinitialized) | head)
    prefix = DETR_PREFIX if segm else ""
    sd = {prefix + k: v for k, v in detector.items()}
    fresh = [prefix + k for k in fresh]
    reinitialized = [prefix + k for k in reinitialized]
    if segm:
        sd.update(mask_part)
    own = model.state_dict()
    unexpected, missing, shapes = state_dict_differences(
        {k: v for k, v in sd.items() if k not in reinitialized},
        {k: v for k, v in own.items() if k not in reinitialized},
    )
    kept = [k for k in missing if segm and not mask_part and k.startswith(MASK_PARTS)]
    kept += [k for k in missing if k in fresh]
    missing = [k for k in missing if k not in kept]
    if unexpected or missing or shapes:
        raise ValueError(
            f"{path}: checkpoint does not match the model. Unmatched checkpoint keys: "
            f"{listing(unexpected)}; model keys absent from the checkpoint: {listing(missing)};"
            f" shape mismatches: {listing(shapes)}. Check that backbone depth, hidden_dim, "
            "enc/dec layers, num_queries, pre_norm and position_embedding match the checkpoint "
            "(and, for the mask head, nheads and return_interm_layers)."
        )
    if prefix + CLASS_HEAD in reinitialized:
        getattr(net, "init_class_head", net.class_embed.reset_parameters)()
    weights = {k: v for k, v in sd.items() if k not in reinitialized}
    model.load_state_dict(weights, strict=False)
    report = {
        "path": path,
        "loaded": sorted(weights),
        "reinitialized": reinitialized,
        "not_in_checkpoint": kept,
        "skipped": skipped,
        "checkpoint_num_classes": release_classes,
        "model_num_classes": num_classes(own_detector, scoring_of(net)),
    }
    log.info("loaded %d tensors from %s", len(weights), path)
    if reinitialized:
        log.warning(
            "%s: class head re-initialised (%d classes in the checkpoint, %d in the model)",
            path,
            report["checkpoint_num_classes"],
            report["model_num_classes"],
        )
    if fresh:
        log.warning("%s: %d tensors of the model's extensions are not in the release and keep "
                    "their initialisation: %s", path, len(fresh), listing(fresh))  # fmt: skip
    if segm and not mask_part:
        log.info("%s: a detection file; the mask head keeps its initialisation", path)
    if mask_part and not segm:
        log.info(
            "%s: a panoptic file; its mask head (%d tensors) is not used", path, len(mask_part)
        )
    if unused:
        log.info("%s: %d tensors of the release are replaced by the model's extensions and not "
                 "used: %s", path, len(unused), listing(unused))  # fmt: skip
    return report


def load_pretrained_into(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load an official DETR release file into an existing model (fine-tuning start point).

    ``model`` is a DETR or a DETRsegm; the file a detection or a panoptic release. Every tensor
    must match by name and shape, except the tensors sized by the class count (the class head:
    :func:`~detr_lightning.detr.state_dicts.class_count_keys`), re-initialised when the
    model's class count differs from the checkpoint's; a detection file leaves a DETRsegm's
    mask head as initialised, and a panoptic file's mask head is not used by a DETR. Returns a
    report dict with ``path``, ``loaded`` (our keys), ``reinitialized``, ``not_in_checkpoint``
    (model keys kept as initialised), ``skipped`` (file keys not used) and both class counts.
    """
    path = os.fspath(path)
    return load_state_dict_into(model, read_official_state_dict(path), path)


def load_state_dict_into(model: nn.Module, sd: dict[str, Tensor], source: str) -> dict[str, Any]:
    """:func:`load_pretrained_into` on a release's state dict already read (official key
    names, e.g. by :func:`release_state_dict`); ``source`` names it in the errors, the logs and
    the report's ``path``."""
    return _load_converted(model, convert_official_state_dict(sd), source)


def load_official_detr(
    path: str | os.PathLike,
    dilation: bool = False,
    num_classes: int | None = None,
    masks: bool = False,
    nheads: int = 8,
) -> nn.Module:
    """Build a DETR (``masks=True``: a DETRsegm) matching an official release file and load it.

    The architecture is inferred from the keys (ResNet depth, hidden size, layer counts, queries,
    pre-norm, position encoding); ``dilation`` (DC5) and ``nheads`` cannot be and are arguments.
    ``num_classes`` other than the checkpoint's re-initialises the class head. ``masks=True``
    needs a panoptic release file; ``masks=False`` on one returns its detector. Returned in eval
    mode.
    """
    path = os.fspath(path)
    sd = read_official_state_dict(path)
    if masks and not is_panoptic(sd):
        raise ValueError(
            f"{path}: a detection release file has no mask head; masks=True needs a panoptic one "
            "(e.g. detr-r50-panoptic-00ce5173.pth). To train a mask head on this detector, wrap "
            "it, DETRsegm(load_official_detr(path)), and train the mask head."
        )
    cfg = infer_official_config(sd, path)
    if masks:
        lay1 = sd.get("mask_head.lay1.weight")
        if lay1 is not None and lay1.shape[1] - cfg["hidden_dim"] != nheads:
            raise ValueError(
                f"{path}: the mask head was trained with nheads={lay1.shape[1] - cfg['hidden_dim']}"
                f" attention maps; pass nheads={lay1.shape[1] - cfg['hidden_dim']}"
            )
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    model: nn.Module = build_detr(
        dilation=dilation, nheads=nheads, return_interm_layers=masks, **cfg
    )
    if masks:
        model = DETRsegm(model)
    load_state_dict_into(model, sd, path)
    return model.eval()
