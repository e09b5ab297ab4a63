"""build_model: the class count comes from the data; an explicit one that differs is refused
(it used to be overwritten silently). build_run: a GPU trainer without a GPU is named first.
build_trainer: a null progress bar or model summary leaves none."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra_jobs import compose_job
from release_files import TINY_DETR

from detr_lightning.utils.build import build_model
from detr_lightning.utils.config_check import ConfigError

TINY = ["experiment=r50", *TINY_DETR]
DATA = SimpleNamespace(num_classes=3, label_to_category_id=[7, 9, 12])


def test_an_explicit_num_classes_other_than_the_data_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"model.num_classes=91 is set.*3 classes here"):
        build_model(compose_job([*TINY, "model.num_classes=91"], tmp_path), DATA)
    for given in ([], ["model.num_classes=3"]):  # unset, or the data's own count
        model = build_model(compose_job([*TINY, *given], tmp_path), DATA)
        assert model.net.class_embed.weight.shape[0] == 4  # 3 classes + "no object"


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_is_named_before_anything_is_built(
    tmp_path, monkeypatch, trainer: str
) -> None:
    # Lightning's own message was "No supported gpu backend found!", after the model was built
    import torch

    from detr_lightning.utils.build import build_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    shapes = tmp_path / "shapes"
    cfg = compose_job(["experiment=shapes", f"trainer={trainer}", f"paths.shapes_dir={shapes}"],
                      tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu .*Fix: trainer=cpu"):
        build_run(cfg)
    assert not shapes.exists()  # the data was not generated


@pytest.mark.parametrize(
    ("overrides", "bar", "summary"),
    [([], True, True),
     (["callbacks.progress_bar=null", "callbacks.model_summary=null"], False, False),
     (["callbacks.progress_bar=null", "+trainer.enable_progress_bar=true"], True, True)],
)  # fmt: skip
def test_a_null_progress_bar_or_model_summary_switches_it_off(
    tmp_path, overrides: list[str], bar: bool, summary: bool
) -> None:
    """Without a callback of its kind Lightning adds its own: a null entry must not leave one."""
    from lightning.pytorch.callbacks import ModelSummary, ProgressBar

    from detr_lightning.utils.build import build_trainer

    trainer = build_trainer(compose_job(["experiment=shapes_plain", *overrides], tmp_path))
    assert any(isinstance(c, ProgressBar) for c in trainer.callbacks) is bar
    assert any(isinstance(c, ModelSummary) for c in trainer.callbacks) is summary
