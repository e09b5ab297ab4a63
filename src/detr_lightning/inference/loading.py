"""Build the detector for inference from ``ckpt_path=`` or ``model.pretrained=``, with its label
map and class names, without the training data or ImageNet weights.

* A Lightning checkpoint of this project carries ``num_classes`` and ``label_to_category_id`` in
  its hyper-parameters and the data's ``categories`` (with names) in the datamodule's state.
* An official DETR release (``{"model": state_dict}``) carries neither: its class count is read
  off the class head, labels are the category ids themselves (COCO models have 91 slots whose
  index is the COCO id, ``data/categories.py``), and 91 classes get COCO's names.

Either way the backbone is built without ImageNet weights (the file holds trained ones), so
nothing is read from the torch hub cache.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class Detector:
    """A LitDETR in eval mode and what predictions need to report.

    Attributes:
        model: ``LitDETR`` (``model.net`` the detector, ``model.detections`` the post-processing).
        category_ids: label -> the dataset's category id.
        names: label -> class name ("" where unknown), or None when nothing is known.
        source: the file the weights came from.
        categories: COCO-style ``categories`` (with ``isthing`` for panoptic data): a
            checkpoint's or the datamodule's, COCO's for a COCO-sized official release, else
            None.
    """

    model: Any
    category_ids: list[int]
    names: list[str] | None
    source: str
    categories: list[dict] | None = None


def names_from_categories(categories: list[dict], category_ids: list[int]) -> list[str] | None:
    """Per-label names from a COCO ``categories`` list (None when it has no names)."""
    by_id = {int(c["id"]): str(c.get("name", "")) for c in categories}
    names = [by_id.get(int(i), "") for i in category_ids]
    return names if any(names) else None


def _datamodule_state(checkpoint: dict) -> dict:
    """The datamodule's state (saved under its class name; the one with ``categories``)."""
    for value in checkpoint.values():
        if isinstance(value, dict) and isinstance(value.get("categories"), list):
            return value
    return {}


def _checkpoint_categories(checkpoint: dict) -> list[dict] | None:
    """The datamodule state's ``categories``."""
    return _datamodule_state(checkpoint).get("categories")


def official_meta(release: dict[str, torch.Tensor]) -> tuple[int, list[int], list[dict] | None]:
    """(num_classes, label_to_category_id, categories) of an official release's state dict
    (:func:`~detr_lightning.checkpointing.pretrained.read_release`), detection or panoptic: its
    labels are COCO's category ids (91 slots; panoptic: 250), so its categories are COCO's
    (detection: the 80 things; panoptic: COCO panoptic's 133). Other class counts: None."""
    from detr_lightning.data.categories import (
        COCO_NUM_CLASSES,
        COCO_PANOPTIC_NUM_CLASSES,
        coco_categories,
    )
    from detr_lightning.detr.official_keys import split_panoptic
    from detr_lightning.detr.state_dicts import num_classes as release_classes

    num_classes = release_classes(split_panoptic(release)[0])
    ids = list(range(num_classes))
    if num_classes not in (COCO_NUM_CLASSES, COCO_PANOPTIC_NUM_CLASSES):
        return num_classes, ids, None
    return num_classes, ids, coco_categories(panoptic=num_classes == COCO_PANOPTIC_NUM_CLASSES)


def inference_config(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose backbone loads no ImageNet weights (the checkpoint or release
    holds the trained backbone) and whose config check skips the data files."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if OmegaConf.select(cfg, "model.net.backbone.pretrained", default=False):
            cfg.model.net.backbone.pretrained = False
    return cfg


def check_inference_config(cfg: DictConfig, needs_data: bool, needs_weights: bool = True) -> None:
    """The entry points' config check (``ckpt_path=last`` resolved in ``cfg``). Without
    ``needs_data`` the data files are not checked (a copy without ``data`` is checked: images
    come from ``input=``); without ``needs_weights`` neither ckpt_path nor model.pretrained is
    required (checked as a "fit" stage: the ONNX backend has its weights in the .onnx)."""
    from detr_lightning.utils.ckpt_resolution import resolve_special_ckpt_path
    from detr_lightning.utils.config_check import check_config

    resolve_special_ckpt_path(cfg, "predict" if needs_weights else "fit")
    checked = cfg
    if not needs_data:
        checked = copy.deepcopy(cfg)
        with open_dict(checked):
            checked.data = None
    check_config(checked, "predict" if needs_weights else "fit")


def load_detector(
    cfg: DictConfig, datamodule: Any = None, device: str | torch.device = "cpu"
) -> Detector:
    """The configured model with the weights of ``cfg.ckpt_path`` (a Lightning checkpoint) or,
    without it, of ``cfg.model.pretrained`` (an official release), in eval mode on ``device``.

    ``datamodule`` (optional) supplies the label map of a release fine-tuned on other data;
    checkpoints always use their own. The config must describe the checkpoint's architecture
    (the same experiment and overrides as its training run; the entry points refuse the
    training-only ones, :mod:`detr_lightning.utils.unread_overrides`).
    """
    from detr_lightning.checkpointing.pretrained import read_release
    from detr_lightning.checkpointing.read import read_checkpoint
    from detr_lightning.checkpointing.validate import (
        check_lightning_checkpoint,
        check_lightning_entries,
    )
    from detr_lightning.data.eval_transform_record import KEY, transform_record, warn_if_different
    from detr_lightning.utils.build import build_model

    ckpt, pretrained = cfg.get("ckpt_path"), OmegaConf.select(cfg, "model.pretrained")
    if not ckpt and not pretrained:
        raise ValueError("give ckpt_path=<Lightning .ckpt> or model.pretrained=<official .pth>")
    cfg = inference_config(cfg)
    checkpoint = release = None
    if ckpt:
        checkpoint = read_checkpoint(ckpt)
        check_lightning_entries(checkpoint, str(ckpt))
        hp = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
        ids = checkpoint.get("label_to_category_id") or hp.get("label_to_category_id")
        num_classes = hp.get("num_classes") or (len(ids) if ids else None)
        ids = [int(i) for i in ids] if ids else list(range(int(num_classes or 0)))
        categories = _checkpoint_categories(checkpoint)
        warn_if_different(_datamodule_state(checkpoint).get(KEY),
                          transform_record(cfg.get("data")), f"ckpt_path={ckpt}")  # fmt: skip
        names = names_from_categories(categories, ids) if categories else None
        source = str(ckpt)
    elif datamodule is not None:
        ids = [int(i) for i in datamodule.label_to_category_id]
        num_classes = len(ids)
        names = list(getattr(datamodule, "category_names", [])) or None
        categories = getattr(datamodule, "categories", None)
        source = str(pretrained)
    else:
        release = read_release(str(pretrained))  # read once: the class count, then the weights
        num_classes, ids, categories = official_meta(release)
        names = names_from_categories(categories, ids) if categories else None
        source = str(pretrained)
    meta = SimpleNamespace(num_classes=num_classes, label_to_category_id=ids)
    # Loads model.pretrained without ckpt_path.
    model = build_model(cfg, meta, training=False, release=release)
    del release
    if checkpoint is not None:
        check_lightning_checkpoint(checkpoint, model, str(ckpt))
        model.load_state_dict(checkpoint["state_dict"])
        from detr_lightning.checkpointing import net_record

        net_record.warn_if_different(checkpoint.get(net_record.KEY), model.net_record,
                                     f"ckpt_path={ckpt}")  # fmt: skip
        del checkpoint
    log.info("detector from %s: %d classes", source, num_classes)
    return Detector(model.eval().to(device), ids, names, source, categories)
