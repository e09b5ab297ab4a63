"""model.init_detector: a Lightning checkpoint's detector starts a (panoptic) model's detector."""

from __future__ import annotations

import pytest
import torch
from lit import tiny_lit
from panoptic_support import tiny_detector, tiny_panoptic_lit

from detr_lightning.checkpointing.init_detector import detector_state_dict, load_detector
from detr_lightning.checkpointing.read import CheckpointLoadError
from detr_lightning.lit_module import LitDETR


def _ckpt(tmp_path, model: LitDETR, name: str = "stage1.ckpt") -> str:
    path = str(tmp_path / name)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    return path


def test_detector_checkpoint_fills_the_detector_and_keeps_the_mask_head(tmp_path) -> None:
    stage1 = tiny_panoptic_lit()  # its detector, saved as a plain-detector LitDETR would be
    detector_only = {f"net.{k}": v for k, v in stage1.net.detr.state_dict().items()}
    path = str(tmp_path / "stage1.ckpt")
    torch.save({"state_dict": {**detector_only, "criterion.empty_weight": torch.ones(9)}}, path)
    stage2 = tiny_panoptic_lit(freeze_detr=True)
    head = {k: v.clone() for k, v in stage2.net.mask_head.state_dict().items()}
    report = load_detector(stage2, path)
    assert report["loaded"] == len(stage1.net.detr.state_dict())
    for key, value in stage1.net.detr.state_dict().items():
        assert torch.equal(stage2.net.detr.state_dict()[key], value), key
    assert all(torch.equal(stage2.net.mask_head.state_dict()[k], v) for k, v in head.items())
    assert not any(p.requires_grad for p in stage2.net.detr.parameters())  # still frozen
    # A panoptic checkpoint (net.detr.*) gives its detector too.
    assert detector_state_dict(stage2.state_dict()).keys() == stage2.net.detr.state_dict().keys()


def test_wrong_files_are_named_with_the_fix(tmp_path) -> None:
    model = tiny_panoptic_lit()
    with pytest.raises(CheckpointLoadError, match="model.init_detector=.*nope.ckpt"):
        load_detector(model, tmp_path / "nope.ckpt")
    official = str(tmp_path / "official.pth")
    torch.save({"model": tiny_detector().state_dict()}, official)
    with pytest.raises(CheckpointLoadError, match="not a Lightning checkpoint"):
        load_detector(model, official)
    other = _ckpt(tmp_path, tiny_lit())  # a ResNet-18 detector: another architecture
    with pytest.raises(CheckpointLoadError, match="does not fit.*backbone"):
        load_detector(model, other)


def test_a_run_of_other_classes_starts_training_with_a_fresh_class_head(tmp_path) -> None:
    """Fine-tuning a run of this project on data of other classes (README: start afresh from
    a run's weights): everything but the class head loads; outside training it is refused."""
    path = _ckpt(tmp_path, tiny_lit(num_classes=3))
    saved = torch.load(path, weights_only=True)["state_dict"]
    model = tiny_lit(num_classes=2)
    fresh_head = {k: v.clone() for k, v in model.net.class_embed.state_dict().items()}
    report = load_detector(model, path)
    assert report["reinitialized"] == ["class_embed.bias", "class_embed.weight"]
    for key, value in model.net.state_dict().items():
        if key.startswith("class_embed."):
            assert torch.equal(value, fresh_head[key[len("class_embed.") :]]), key
        else:
            assert torch.equal(value, saved[f"net.{key}"]), key
    with pytest.raises(CheckpointLoadError, match=r"shape mismatches: .*class_embed\.bias"):
        load_detector(tiny_lit(num_classes=2), path, fine_tuning=False)


def test_the_tensors_sized_by_the_class_count_are_found_by_the_class_heads_difference() -> None:
    from detr_lightning.checkpointing.init_detector import class_count_keys

    z = torch.zeros
    # 5 -> 3 classes with "no object"; "more_queries" differs by 2 as well but is not sized by
    # the class count (9 rows): another architecture, refused by the shape check
    saved = {"class_embed.weight": z(6, 8), "class_embed.bias": z(6), "dn.label_embed": z(5, 8),
             "query_embed.weight": z(5, 8), "other.weight": z(7, 8), "more_queries": z(9, 8)}  # fmt: skip
    own = {"class_embed.weight": z(4, 8), "class_embed.bias": z(4), "dn.label_embed": z(3, 8),
           "query_embed.weight": z(5, 8), "other.weight": z(6, 8), "more_queries": z(7, 8)}  # fmt: skip
    assert class_count_keys(saved, own) == ["class_embed.bias", "class_embed.weight",
                                            "dn.label_embed"]  # fmt: skip
    assert class_count_keys(own, own) == []
