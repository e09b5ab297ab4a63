"""Official facebookresearch/detr checkpoints: key conversion, architecture inference, loading.

A release file is ``{"model": state_dict}`` with keys such as ``backbone.0.body.layer1.0.conv1.weight``
(ResNet trunk), ``backbone.1.row_embed.weight`` (learned position encoding, if any),
``transformer.encoder.layers.0.self_attn.in_proj_weight``, ``class_embed.weight``,
``bbox_embed.layers.0.weight``, ``query_embed.weight`` and ``input_proj.weight``.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import torch
from torch import Tensor, nn

from detr_lightning.detr.model import DETR, build_detr

log = logging.getLogger(__name__)

_PREFIXES = (("backbone.0.", "backbone."), ("backbone.1.", "position_encoding."))
_HEAD = ("class_embed.weight", "class_embed.bias")
_RESNETS = {
    (False, 2): "resnet18",
    (False, 6): "resnet34",
    (True, 6): "resnet50",
    (True, 23): "resnet101",
}


def convert_official_state_dict(official_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename official DETR keys to this project's (``backbone.0.body.X`` -> ``backbone.body.X``,
    ``backbone.1.X`` -> ``position_encoding.X``; transformer and heads keep their names)."""
    out = {}
    for key, value in official_sd.items():
        for old, new in _PREFIXES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


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
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or "class_embed.weight" not in obj:
        raise ValueError(
            f"{path}: expected an official DETR file {{'model': state_dict}} with a "
            "'class_embed.weight' entry; got something else"
        )
    return obj


def _count(sd: dict[str, Tensor], prefix: str) -> int:
    """Number of numbered children under ``prefix`` (e.g. blocks of a ResNet stage)."""
    idx = {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def infer_official_config(sd: dict[str, Tensor], path: str = "<state dict>") -> dict[str, Any]:
    """``build_detr`` keyword arguments read off an official state dict's keys and shapes.

    Not recoverable from weights: the head count (default 8) and DC5 dilation.
    """
    blocks = _count(sd, "backbone.0.body.layer3.")
    bottleneck = "backbone.0.body.layer1.0.conv3.weight" in sd
    backbone = _RESNETS.get((bottleneck, blocks))
    if backbone is None:
        raise ValueError(
            f"{path}: cannot infer the ResNet depth: layer3 has {blocks} "
            f"{'bottleneck' if bottleneck else 'basic'} blocks (known: resnet18/34/50/101)"
        )
    ffn = [k for k in ("encoder", "decoder") if f"transformer.{k}.layers.0.linear1.weight" in sd]
    cfg: dict[str, Any] = {
        "backbone": backbone,
        "num_classes": sd["class_embed.weight"].shape[0] - 1,
        "num_queries": sd["query_embed.weight"].shape[0],
        "hidden_dim": sd["query_embed.weight"].shape[1],
        "enc_layers": _count(sd, "transformer.encoder.layers."),
        "dec_layers": _count(sd, "transformer.decoder.layers."),
        "pre_norm": "transformer.encoder.norm.weight" in sd,
        "position_embedding": "learned" if "backbone.1.row_embed.weight" in sd else "sine",
        "use_ffn": bool(ffn),
    }
    if ffn:
        cfg["dim_feedforward"] = sd[f"transformer.{ffn[0]}.layers.0.linear1.weight"].shape[0]
    return cfg


def _listing(keys: list[str], limit: int = 20) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _load_converted(model: DETR, sd: dict[str, Tensor], path: str) -> dict[str, Any]:
    own = model.state_dict()
    unexpected = sorted(set(sd) - set(own))
    missing = sorted(set(own) - set(sd))
    mismatched = sorted(k for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    reinitialized: list[str] = []
    if any(k in mismatched for k in _HEAD) and sd[_HEAD[0]].shape[1] == own[_HEAD[0]].shape[1]:
        # The fine-tuning path: a new label set gets a fresh class head, everything else loads.
        model.class_embed.reset_parameters()
        reinitialized = list(_HEAD)
        mismatched = [k for k in mismatched if k not in _HEAD]
    if unexpected or missing or mismatched:
        shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
        raise ValueError(
            f"{path}: checkpoint does not match the model. Unmatched checkpoint keys: "
            f"[{_listing(unexpected)}]; model keys absent from the checkpoint: [{_listing(missing)}];"
            f" shape mismatches: [{_listing(shapes)}]. Check that backbone depth, hidden_dim, "
            "enc/dec layers, num_queries, pre_norm and position_embedding match the checkpoint."
        )
    weights = {k: v for k, v in sd.items() if k not in reinitialized}
    model.load_state_dict(weights, strict=False)
    report = {
        "path": path,
        "loaded": sorted(weights),
        "reinitialized": reinitialized,
        "checkpoint_num_classes": sd[_HEAD[0]].shape[0] - 1,
        "model_num_classes": own[_HEAD[0]].shape[0] - 1,
    }
    log.info("loaded %d tensors from %s", len(weights), path)
    if reinitialized:
        log.warning(
            "%s: class head re-initialised (%d classes in the checkpoint, %d in the model)",
            path,
            report["checkpoint_num_classes"],
            report["model_num_classes"],
        )
    return report


def load_pretrained_into(model: DETR, path: str | os.PathLike) -> dict[str, Any]:
    """Load an official DETR release file into an existing model (fine-tuning start point).

    Every tensor must match by name and shape, except the class head, which is re-initialised
    when the model's ``num_classes`` differs from the checkpoint's. Returns a report dict with
    ``path``, ``loaded`` (our keys), ``reinitialized`` and both class counts.
    """
    path = os.fspath(path)
    return _load_converted(model, convert_official_state_dict(read_official_state_dict(path)), path)


def load_official_detr(
    path: str | os.PathLike,
    dilation: bool = False,
    num_classes: int | None = None,
    masks: bool = False,
    nheads: int = 8,
) -> nn.Module:
    """Build a DETR matching an official release file and load its weights.

    The architecture is inferred from the keys (ResNet depth, hidden size, layer counts, queries,
    pre-norm, position encoding); ``dilation`` (DC5) and ``nheads`` cannot be and are arguments.
    ``num_classes`` other than the checkpoint's re-initialises the class head. Returned in eval mode.
    """
    if masks:
        raise NotImplementedError(
            "load_official_detr(masks=True): the panoptic mask head is not implemented yet "
            "(see the panoptic segmentation issue); load the detector with masks=False"
        )
    path = os.fspath(path)
    sd = read_official_state_dict(path)
    cfg = infer_official_config(sd, path)
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    model = build_detr(dilation=dilation, nheads=nheads, **cfg)
    _load_converted(model, convert_official_state_dict(sd), path)
    return model.eval()
