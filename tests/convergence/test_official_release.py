"""An official DETR release into a lever model (``model.pretrained=`` on model=convergence): the
paper's tensors load under the levers' names, the parts a lever replaced are not used, and the
levers' own parameters keep their initialisation."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import levers
import pytest
import torch
from release_files import official_state_dict

from detr_lightning.checkpoint import load_pretrained_into
from detr_lightning.checkpointing.pretrained import load_pretrained
from detr_lightning.checkpointing.read import CheckpointLoadError
from detr_lightning.convergence.conditional_queries import ConditionalQueryScale
from detr_lightning.convergence.deformable_attention import BoxDeformableAttention
from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.detr.model import DETR


def _release(tmp_path: Path, num_classes: int = 3, decoder_layers: int = 3) -> tuple[DETR, Path]:
    """A paper DETR of the levers' test size, randomly initialised, saved as a release file."""
    detr = DETR(*levers.parts(decoder_layers=decoder_layers), num_classes=num_classes,
                num_queries=5).eval()  # fmt: skip
    for p in detr.parameters():  # no tensor of the release equals a fresh model's by chance
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "detr-release.pth"
    torch.save({"model": official_state_dict(detr)}, path)
    return detr, path


def test_learned_queries_are_the_papers_model_after_loading(tmp_path) -> None:
    detr, path = _release(tmp_path)
    model = levers.model(queries=levers.learned()).eval()
    report = load_pretrained_into(model, path)
    assert report["not_in_checkpoint"] == [] and report["skipped"] == []
    assert torch.equal(model.queries.embed.weight, detr.query_embed.weight)
    x, mask = torch.randn(2, 3, 64, 96), torch.ones(2, 64, 96, dtype=torch.bool)
    with torch.no_grad():
        ours, paper = model(x, mask), detr(x, mask)
    torch.testing.assert_close(ours["pred_logits"], paper["pred_logits"])
    torch.testing.assert_close(ours["pred_boxes"], paper["pred_boxes"])


def test_a_release_into_a_decoder_hook_model_is_the_papers_model_until_the_hook_learns(
    tmp_path,
) -> None:
    detr, path = _release(tmp_path)
    model = levers.model(decoder_hook=ConditionalQueryScale).eval()
    report = load_pretrained_into(model, path)
    assert report["skipped"] == []
    assert report["not_in_checkpoint"] == sorted(
        f"decoder_hook.{k}" for k in model.decoder_hook.state_dict()
    )
    x, mask = torch.randn(2, 3, 64, 96), torch.ones(2, 64, 96, dtype=torch.bool)
    with torch.no_grad():
        ours, paper = model(x, mask), detr(x, mask)
    torch.testing.assert_close(ours["pred_logits"], paper["pred_logits"])
    torch.testing.assert_close(ours["pred_boxes"], paper["pred_boxes"])


def test_replaced_parts_are_skipped_and_lever_parameters_keep_their_init(tmp_path, caplog) -> None:
    detr, path = _release(tmp_path, num_classes=7)
    model = levers.model(
        queries=levers.anchors(), box_refinement=levers.REFINE, scoring=FocalScoring()
    )
    fresh_before = {k: v.clone() for k, v in model.state_dict().items()
                    if k.startswith(("queries.", "box_refinement.", "ref_point_head.", "bbox_embed."))}  # fmt: skip
    report = load_pretrained_into(model, path)
    assert sorted(report["skipped"]) == sorted(k for k in official_state_dict(detr)
                                               if k.startswith(("query_embed.", "bbox_embed.")))  # fmt: skip
    assert sorted(report["not_in_checkpoint"]) == sorted(fresh_before)
    for k, v in fresh_before.items():
        assert torch.equal(model.state_dict()[k], v), k
    release = official_state_dict(detr)
    for k in ("transformer.decoder.layers.2.linear1.weight", "input_proj.weight"):
        assert torch.equal(model.state_dict()[k], release[k])
    # 7 softmax classes + no-object in the file, 3 sigmoid classes here: a fresh head with the
    # focal prior (1 % per class), not torch's default bias
    assert report["reinitialized"] == ["class_embed.bias", "class_embed.weight"]
    torch.testing.assert_close(model.class_embed.bias, torch.full((3,), -math.log(99.0)))
    assert "keep their initialisation" in caplog.text


def test_deformable_attention_replaces_the_releases_cross_attention(tmp_path) -> None:
    _, path = _release(tmp_path)
    deformable = partial(BoxDeformableAttention, num_points=2)
    model = levers.model(queries=levers.anchors(), box_refinement=levers.REFINE,
                         cross_attention=deformable)  # fmt: skip
    report = load_pretrained_into(model, path)
    attn = [k for k in report["skipped"] if ".multihead_attn." in k]
    assert len(attn) == 3 * 4  # in_proj weight/bias and out_proj weight/bias per layer
    assert any(".multihead_attn.sampling_offsets." in k for k in report["not_in_checkpoint"])


def test_another_architecture_still_stops_naming_the_differences(tmp_path) -> None:
    _, path = _release(tmp_path, decoder_layers=3)
    with pytest.raises(ValueError, match="transformer.decoder.layers.2"):
        load_pretrained_into(levers.model(queries=levers.learned(), decoder_layers=2), path)


def test_a_coco_release_into_a_focal_model_counts_the_models_classes_by_its_scoring(
    tmp_path,
) -> None:
    # 91 softmax classes + "no object" in the file; 3 sigmoid classes here (3 logit rows, no
    # "no object" row), with a denoiser whose label table [3, d] is sized by the class count too.
    _, path = _release(tmp_path, num_classes=91)
    model = levers.model(queries=levers.anchors(), box_refinement=levers.REFINE,
                         denoiser=levers.denoiser(), scoring=FocalScoring())  # fmt: skip
    table = model.denoiser.label_embed.weight.clone()
    report = load_pretrained_into(model, path)
    assert (report["checkpoint_num_classes"], report["model_num_classes"]) == (91, 3)
    assert report["reinitialized"] == ["class_embed.bias", "class_embed.weight"]
    assert "denoiser.label_embed.weight" in report["not_in_checkpoint"]
    assert torch.equal(model.denoiser.label_embed.weight, table)
    # 2 softmax classes + "no object" = 3 rows, as 3 sigmoid classes: the shapes agree, yet the
    # softmax head is no sigmoid head: fresh (focal prior) for fine-tuning, refused for eval.
    (tmp_path / "two").mkdir()
    _, two = _release(tmp_path / "two", num_classes=2)
    same_rows = levers.model(queries=levers.learned(), scoring=FocalScoring())
    report = load_pretrained_into(same_rows, two)
    assert report["reinitialized"] == ["class_embed.bias", "class_embed.weight"]
    torch.testing.assert_close(same_rows.class_embed.bias, torch.full((3,), -math.log(99.0)))
    with pytest.raises(CheckpointLoadError, match="re-initialised|class head"):
        load_pretrained(levers.model(queries=levers.learned(), scoring=FocalScoring()), two,
                        fine_tuning=False)  # fmt: skip
    # Evaluating the release on such a model (nothing else missing) names both class counts.
    plain = levers.model(queries=levers.learned(), scoring=FocalScoring())
    with pytest.raises(CheckpointLoadError, match="the release has 91 classes and the data 3;"):
        load_pretrained(plain, path, fine_tuning=False)
