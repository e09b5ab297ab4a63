"""A checkpoint records the composed ``model.net``; loading it into a model composed otherwise
(a setting that changes no tensor shape) warns with every differing key."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from hydra_jobs import compose_job
from release_files import TINY_DETR

from detr_lightning.checkpointing import net_record
from detr_lightning.utils.build import build_model

TINY = ["experiment=r50", *TINY_DETR]
DATA = SimpleNamespace(num_classes=3, label_to_category_id=[7, 9, 12])


def _built(tmp_path, *overrides: str):
    return build_model(compose_job([*TINY, *overrides], tmp_path), DATA)


def test_the_record_is_the_flat_resolved_net_without_weight_sources(tmp_path) -> None:
    cfg = compose_job([*TINY, "model.net.num_queries=7"], tmp_path)
    record = net_record.net_record(cfg.model)
    assert record["num_queries"] == 7 and record["transformer.d_model"] == 32
    assert record["backbone.name"] == "resnet18"
    assert record["num_classes"] == cfg.model.num_classes  # resolved, not "${...}"
    assert not [k for k in record if k.split(".")[-1] in ("pretrained", "weights")]


def test_a_checkpoint_loaded_into_another_composition_names_the_keys(tmp_path, caplog) -> None:
    trained = _built(tmp_path, "model.net.num_queries=5")
    checkpoint: dict = {}
    trained.on_save_checkpoint(checkpoint)
    assert checkpoint[net_record.KEY] == trained.net_record
    caplog.set_level(logging.WARNING)
    _built(tmp_path, "model.net.num_queries=5").on_load_checkpoint(checkpoint)
    assert not caplog.records  # the same composition: nothing to say
    other = _built(tmp_path, "model.net.num_queries=5", "model.net.aux_loss=false")
    other.on_load_checkpoint(checkpoint)
    (record,) = caplog.records
    assert "the checkpoint was trained with another model.net than this run composes " \
           "(model.net.aux_loss: True -> False)" in record.getMessage()  # fmt: skip
    assert "Fix: give the training run's model overrides" in record.getMessage()


def test_a_checkpoint_without_a_record_loads_without_a_word(caplog) -> None:
    caplog.set_level(logging.WARNING)
    assert net_record.warn_if_different(None, {"a": 1}, "old.ckpt") == []
    assert net_record.warn_if_different({"a": 1}, {"a": 2, "b": 3}, "x.ckpt") == ["a", "b"]
    assert "model.net.b: '(absent)' -> 3" in caplog.records[0].getMessage()
