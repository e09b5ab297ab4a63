"""``model.init_detector=``: start a model's detector from a Lightning checkpoint of this project.

The panoptic recipe's second stage (paper Sec. 4.4) trains the mask head on the detector that
the first stage trained: the stage runner (:mod:`detr_lightning.stages`) sets this key to stage
1's best checkpoint. Only the detector's weights are read (``net.*`` of a detector checkpoint, or
``net.detr.*`` of a panoptic one); the mask head, optimizer, schedule and step start fresh,
unlike ``ckpt_path=`` (resume). Loaded once, where the model is built (``utils.build``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import Tensor, nn

from detr_lightning.checkpointing.read import CheckpointLoadError, read_checkpoint
from detr_lightning.detr.segmentation import detector_of
from detr_lightning.detr.state_dicts import class_count_keys, listing, state_dict_differences

log = logging.getLogger(__name__)

KEY = "model.init_detector"


def detector_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A LitDETR state dict -> its detector's: ``net.X`` (a detector) or ``net.detr.X`` (a
    DETRsegm) -> ``X``."""
    net = {k[len("net.") :]: v for k, v in state_dict.items() if k.startswith("net.")}
    if any(k.startswith("detr.") for k in net):
        return {k[len("detr.") :]: v for k, v in net.items() if k.startswith("detr.")}
    return net


def load_detector(
    model: nn.Module, path: str | os.PathLike, fine_tuning: bool = True
) -> dict[str, Any]:
    """Copy the detector weights of the Lightning checkpoint ``path`` into ``model.net``'s
    detector (``model.net.detr`` for a DETRsegm). Every tensor must match by name and shape,
    except, with ``fine_tuning`` (training on data of other classes), the tensors sized by
    the class count (:func:`class_count_keys`), which keep the fresh model's initialisation.

    Returns ``{"path", "loaded": number of tensors, "reinitialized": keys}``. Raises
    CheckpointLoadError naming ``model.init_detector=<path>`` for an unreadable file, a file that
    is not a Lightning checkpoint, or one of another architecture.
    """
    path = os.fspath(path)
    checkpoint = read_checkpoint(path, KEY)
    where = f"{KEY}={path}"
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointLoadError(
            f"{where}: not a Lightning checkpoint of this project (no 'state_dict'). Fix: give a "
            ".ckpt written by detr_lightning.train (an official release goes to model.pretrained)."
        )
    net = getattr(model, "net", model)
    detector = detector_of(net)
    weights = detector_state_dict(checkpoint["state_dict"])
    own = detector.state_dict()
    fresh = class_count_keys(weights, own) if fine_tuning else []
    unexpected, missing, shapes = state_dict_differences(
        {k: v for k, v in weights.items() if k not in fresh},
        {k: v for k, v in own.items() if k not in fresh},
    )
    if unexpected or missing or shapes:
        raise CheckpointLoadError(
            f"{where}: its detector does not fit the model built from this config. Checkpoint "
            f"keys the detector lacks: {listing(unexpected)}; detector keys absent from the "
            f"checkpoint: {listing(missing)}; shape mismatches: {listing(shapes)}. Fix: "
            "compose the same model, backbone and data as the run that wrote it."
        )
    if fresh:
        log.warning(
            "%s: class head re-initialised (%d logits in the checkpoint, %d in the model): %s",
            where, weights["class_embed.weight"].shape[0], own["class_embed.weight"].shape[0],
            listing(fresh),
        )  # fmt: skip
        weights = {k: v for k, v in weights.items() if k not in fresh}
    detector.load_state_dict(weights, strict=not fresh)
    log.info("initialised the detector from %s (%d tensors)", path, len(weights))
    return {"path": path, "loaded": len(weights), "reinitialized": fresh}
