"""``model.pretrained=``: initialise a freshly built model from an official DETR release, once.

The file is read once, with ``validate.read_checkpoint`` (weights_only, mmap), so that a
truncated, corrupt or unsafe file fails with the same named message as ``ckpt_path=``; then
``detr_lightning.detr.official.load_state_dict_into`` maps the official keys and checks them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import Tensor, nn

from detr_lightning.checkpointing.read import CheckpointLoadError, read_checkpoint
from detr_lightning.detr.state_dicts import listing

log = logging.getLogger(__name__)

KEY = "model.pretrained"
# What evaluation and inference need of a release that does not hold the whole model.
_FINE_TUNE_FIRST = (
    "fine-tune first (train with model.pretrained=PATH) and give the run's checkpoint as ckpt_path="
)


def read_release(path: str | os.PathLike) -> dict[str, Tensor]:
    """The official state dict of the release ``path``, read once (weights_only, mmap: tensors
    are only mapped until loaded). Raises CheckpointLoadError naming ``model.pretrained=<path>``,
    the reason and the fix for a missing, truncated, corrupt or unsafe file, a Lightning
    checkpoint of this project, or any other content."""
    from detr_lightning.detr.official import release_state_dict

    path = os.fspath(path)
    content = read_checkpoint(path, KEY)
    if isinstance(content, dict) and "state_dict" in content and "model" not in content:
        raise CheckpointLoadError(
            f"{KEY}={path}: a Lightning checkpoint of this project, not an official DETR release. "
            "Fix: give it as ckpt_path=PATH (resume, eval, predict) and leave model.pretrained "
            "unset."
        )
    try:
        return release_state_dict(content, f"{KEY}={path}")
    except ValueError as err:
        raise CheckpointLoadError(str(err)) from None  # the message carries the reason


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    fine_tuning: bool = True,
    release: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Load the official release ``path`` into ``model.net`` (or ``model`` itself when it has no
    ``net``); the class head is re-initialised when the class counts differ, and the model's
    tensors the release lacks (a mask head, a lever's own) keep their initialisation
    (fine-tuning); with ``fine_tuning=False`` (evaluation, inference) either is refused, as
    it would be scored untrained. ``release``: the file's :func:`read_release`, when the caller
    has read it already.

    Returns ``load_state_dict_into``'s report. Raises CheckpointLoadError naming
    ``model.pretrained=<path>``, the reason and the fix for a missing, truncated, corrupt or
    unsafe file and for one of another architecture.
    """
    from detr_lightning.detr.official import load_state_dict_into

    path = os.fspath(path)
    if release is None:
        release = read_release(path)
    net = getattr(model, "net", model)
    try:
        report = load_state_dict_into(net, release, f"{KEY}={path}")
    except ValueError as err:
        raise CheckpointLoadError(str(err)) from None  # the message carries the reason
    if report["not_in_checkpoint"] and not fine_tuning:
        raise CheckpointLoadError(
            f"{KEY}={path}: the release lacks {len(report['not_in_checkpoint'])} tensors of this "
            f"model ({listing(report['not_in_checkpoint'])}: a mask head or a lever's own "
            "parameters), which would be scored untrained. They are trained by fine-tuning "
            f"only. Fix: {_FINE_TUNE_FIRST}; or evaluate the release on the model it holds (a "
            "panoptic release for head=panoptic; the paper's model=detr)."
        )
    if report["reinitialized"] and not fine_tuning:
        n_file, n_data = report["checkpoint_num_classes"], report["model_num_classes"]
        raise CheckpointLoadError(
            f"{KEY}={path}: the release has {n_file} classes and the data {n_data}; its class "
            "head would be re-initialised (random) and scored. A new class head is trained by "
            f"fine-tuning only. Fix: {_FINE_TUNE_FIRST}; or keep the release's classes: "
            "data.coco_id_space=true when the data's category ids are COCO's, or, for predict, "
            "input=<image or folder> without data overrides."
        )
    log.info(
        "initialised the model from %s (%d tensors; re-initialised: %s)",
        path,
        len(report["loaded"]),
        ", ".join(report["reinitialized"]) or "none",
    )
    return report
