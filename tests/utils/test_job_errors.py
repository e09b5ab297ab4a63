"""Entry points end an explained error with its message alone (and its notes), exit status 1;
HYDRA_FULL_ERROR=1 keeps the traceback; other errors pass through untouched. A component's own
argument check, raised while Hydra instantiates it, gets the same form, named by its key."""

from __future__ import annotations

import logging

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from detr_lightning.data.errors import DatasetFormatError, ImageLoadError
from detr_lightning.errors import ExplainedError
from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.job_errors import exit_on_explained_errors


def _failing(err: BaseException):
    @exit_on_explained_errors
    def main(cfg: object) -> None:
        raise err

    return main


def test_an_explained_error_is_logged_alone_with_its_notes_and_exits_1(caplog, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    err = ImageLoadError("Cannot decode image a.jpg (listed in t.json). Fix: re-export it.")
    err.add_note("Training stopped at global step 3 (epoch 0); last.ckpt (global step 3) is x.")
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        _failing(err)(None)
    assert stop.value.code == 1
    assert caplog.messages == [
        "ImageLoadError: Cannot decode image a.jpg (listed in t.json). Fix: re-export it.\n"
        "Training stopped at global step 3 (epoch 0); last.ckpt (global step 3) is x.\n"
        "(HYDRA_FULL_ERROR=1 shows the traceback)"
    ]


@pytest.mark.parametrize("kind", [ConfigError, DatasetFormatError, ImageLoadError])
def test_the_projects_named_errors_are_explained_and_others_pass(kind, monkeypatch) -> None:
    assert issubclass(kind, ExplainedError)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit):
        _failing(kind("bad"))(None)
    with pytest.raises(KeyError):  # a bug keeps its traceback
        _failing(KeyError("x"))(None)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(kind, match="bad"):
        _failing(kind("bad"))(None)


def test_errors_of_using_a_model_are_explained_too(tmp_path) -> None:
    """predict's and export's setting errors keep their built-in bases (callers catch those)."""
    from detr_lightning.errors import ExistingOutputError, MissingFileError
    from detr_lightning.inference.image_search import find_images

    assert issubclass(MissingFileError, FileNotFoundError)
    assert issubclass(ExistingOutputError, FileExistsError)
    with pytest.raises(MissingFileError, match="input=.*no such image file or folder"):
        find_images(tmp_path / "nowhere")


def test_in_a_sweep_the_job_fails_and_hydra_goes_on(monkeypatch, caplog) -> None:
    """Hydra catches an Exception per job and runs the next one; a SystemExit would end the
    sweep."""
    from detr_lightning.utils import job_errors

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(job_errors, "_in_sweep", lambda: True)
    with pytest.raises(job_errors.JobFailed, match=r"^ConfigError: bad\b") as failed:
        _failing(ConfigError("bad"))(None)
    assert isinstance(failed.value, Exception) and failed.value.__cause__ is None
    assert "ConfigError: bad" in caplog.text  # in the job's log too


def _building(node: dict):
    """A task that instantiates ``model`` of a config whose ``model.criterion.matcher`` is
    ``node``, as the entry points build the model."""
    cfg = OmegaConf.create({"model": {"_target_": "builtins.dict", "criterion": {
        "_target_": "builtins.dict", "matcher": node}}})  # fmt: skip

    @exit_on_explained_errors
    def main(_: object) -> None:
        instantiate(cfg.model)

    return main


def _one_line(node: dict, caplog) -> str:
    """The one message a failed build of ``node`` logs; the job exits with status 1."""
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        _building(node)(None)
    assert stop.value.code == 1
    [message] = caplog.messages
    return message


def test_a_components_own_argument_check_is_named_by_its_key(caplog, monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    zero_costs = {"_target_": "detr_lightning.detr.matcher.HungarianMatcher",
                  "cost_class": 0, "cost_bbox": 0, "cost_giou": 0}  # fmt: skip
    message = _one_line(zero_costs, caplog)
    assert message.startswith(
        "ValueError in model.criterion.matcher (detr_lightning.detr.matcher.HungarianMatcher): "
        "HungarianMatcher: cost_class, cost_bbox and cost_giou are all 0"
    )
    assert message.endswith("(paper: 1, 5, 2).\n(HYDRA_FULL_ERROR=1 shows the traceback)")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(InstantiationException):
        _building(zero_costs)(None)


def test_missing_imagenet_weights_are_named_by_the_backbones_key(
    caplog, monkeypatch, tmp_path
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = {"_target_": "detr_lightning.detr.backbone.Backbone", "name": "resnet18",
                "pretrained": True}  # fmt: skip
    assert _one_line(backbone, caplog).startswith(
        "MissingFileError in model.criterion.matcher (detr_lightning.detr.backbone.Backbone): "
        f"ImageNet weights for backbone 'resnet18' not found at {tmp_path}"
    )


def test_errors_not_raised_by_a_components_check_keep_hydras_report(monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    outside = {"_target_": "fractions.Fraction", "numerator": "not a number"}  # the stdlib's
    with pytest.raises(InstantiationException, match="full_key: model.criterion.matcher"):
        _building(outside)(None)
    not_an_argument_check = {"_target_": "detr_lightning.detr.matcher.HungarianMatcher",
                             "_args_": [1, 5, 2, None, 0]}  # fmt: skip  # Python's TypeError
    with pytest.raises(InstantiationException, match="positional arguments"):
        _building(not_an_argument_check)(None)
