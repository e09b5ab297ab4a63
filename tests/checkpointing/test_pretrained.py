"""Fine-tuning reads the release file once, where the model is built: the final test metrics come
from the trained weights, never from a re-read of the file."""

from __future__ import annotations

import copy

import pytest
import torch
from cli import TINY
from hydra.errors import InstantiationException
from hydra_jobs import compose_job
from omegaconf import OmegaConf
from release_files import official_state_dict
from reliability_support import WeightSpy

from detr_lightning.train import train
from detr_lightning.utils.build import build_datamodule, build_model


def test_tested_weights_are_the_trained_ones(tmp_path, shapes_root, monkeypatch) -> None:
    cfg = compose_job(["experiment=shapes_plain", "schedule=smoke", f"paths.shapes_dir={shapes_root}",
                       *TINY, "trainer.limit_train_batches=2",
                       "model.optimizer.lr=1e-3", "model.lr_backbone=1e-3", "logger=none",
                       # No checkpoint callback: train.py tests the in-memory weights, the case
                       # where LitDETR.setup() used to re-load the release over them.
                       "callbacks.model_checkpoint=null", "+trainer.enable_checkpointing=false",
                       "callbacks.val_images=null", "+callbacks.spy._target_=reliability_support.WeightSpy"],
                      tmp_path)  # fmt: skip
    # An official-format release of exactly this architecture, from random weights.
    release = official_state_dict(build_model(copy.deepcopy(cfg), build_datamodule(cfg)).net)
    torch.save({"model": release}, tmp_path / "release.pth")
    cfg.model.pretrained = str(tmp_path / "release.pth")

    reads = []
    load = torch.load
    monkeypatch.setattr(
        torch, "load", lambda f, *a, **kw: reads.append(str(f)) or load(f, *a, **kw)
    )
    WeightSpy.seen.clear()
    metrics = train(cfg)

    # Once, at build time: the file is not re-read to check it, to load it or to test.
    assert [r for r in reads if r.endswith("release.pth")] == [str(tmp_path / "release.pth")]
    assert "AP" in metrics
    seen = WeightSpy.seen
    file_weights = {k.replace("backbone.0.", "backbone.", 1).replace("backbone.1.", "position_encoding.", 1): v
                    for k, v in release.items()}  # fmt: skip
    for key in ("class_embed.weight", "transformer.decoder.layers.0.linear1.weight",
                "input_proj.weight", "query_embed.weight"):  # fmt: skip
        assert torch.equal(seen["fit_start"][key], file_weights[key]), key  # started from it
        assert torch.equal(seen["test_start"][key], seen["train_end"][key]), key  # tested = trained
        assert not torch.equal(seen["test_start"][key], file_weights[key]), key  # not the file's


def test_a_checkpoint_or_a_release_stands_in_for_the_imagenet_weights(
    tmp_path, shapes_root, monkeypatch
) -> None:
    # `make eval CKPT=...` on an R50 preset, on a machine with no ImageNet file in the torch
    # cache: the checkpoint holds the trained backbone, so the file is not needed.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_cache"))
    cfg = compose_job(["experiment=shapes_plain", "backbone=r18", "model.net.backbone.pretrained=true",
                       f"paths.shapes_dir={shapes_root}", *TINY], tmp_path, name="eval")  # fmt: skip
    datamodule = build_datamodule(cfg)
    with pytest.raises(InstantiationException, match="ImageNet weights for backbone 'resnet18'"):
        build_model(copy.deepcopy(cfg), datamodule)  # the real loading path, nothing cached
    plain = copy.deepcopy(cfg)
    plain.model.net.backbone.pretrained = False
    release = tmp_path / "release.pth"
    torch.save({"model": official_state_dict(build_model(plain, datamodule).net)}, release)
    for key, value in (
        ("ckpt_path", str(tmp_path / "run.ckpt")),
        ("model.pretrained", str(release)),
    ):
        given = copy.deepcopy(cfg)
        OmegaConf.update(given, key, value, force_add=True)
        build_model(given, datamodule)
        assert given.model.net.backbone.pretrained is False, key
