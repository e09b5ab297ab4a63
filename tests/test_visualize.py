"""``detr_lightning.visualize`` and the attention_maps callback: the paper's pictures as PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from cli import run_cli
from lit import loader, quiet_trainer, tiny_lit
from PIL import Image
from release_files import TINY_DETR

from detr_lightning.attention_callback import AttentionMapLogger
from detr_lightning.detr import DETR, Backbone, Transformer, build_position_encoding


def official_release(path: Path) -> Path:
    """A tiny random paper DETR as an official release file (91 COCO classes, "dog" favoured)."""
    torch.manual_seed(0)
    net = DETR(Backbone("resnet18"), build_position_encoding("sine", 32),
               Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                           dim_feedforward=64), num_classes=91, num_queries=5)  # fmt: skip
    with torch.no_grad():
        net.class_embed.bias[18] = 20.0
    renamed = {
        k.replace("backbone.", "backbone.0.", 1).replace("position_encoding.", "backbone.1.", 1): v
        for k, v in net.state_dict().items()
    }
    torch.save({"model": renamed}, path)
    return path


def test_visualize_writes_the_encoder_and_decoder_pictures(tmp_path) -> None:
    image = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(image)
    release = official_release(tmp_path / "detr-tiny.pth")
    out = run_cli("visualize", ["experiment=r50", f"model.pretrained={release}", f"input={image}",
                                f"output_dir={tmp_path / 'vis'}", "device=cpu", "max_objects=3",
                                *TINY_DETR], tmp_path)  # fmt: skip
    for kind in ("decoder", "encoder"):
        path = tmp_path / "vis" / f"photo_{kind}.png"
        assert f"figure: {path}" in out
        with Image.open(path) as png:
            assert png.width > 300 and png.height > 200
            assert np.asarray(png.convert("L")).std() > 10  # a picture, not a blank canvas
    # output_dir is the run directory: log and config beside the figures, no outputs/ folder
    assert f"run directory: {tmp_path / 'vis'}" in out and not (tmp_path / "outputs").exists()
    assert (tmp_path / "vis" / "visualize.log").exists()
    assert "max_objects: 3" in (tmp_path / "vis" / ".hydra" / "config.yaml").read_text()


def test_visualize_fails_naming_an_unreadable_image(tmp_path) -> None:
    """It used to exit 0 without a figure."""
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8\xff not really a jpeg")
    release = official_release(tmp_path / "detr-tiny.pth")
    out = run_cli("visualize", ["experiment=r50", f"model.pretrained={release}", f"input={image}",
                                f"output_dir={tmp_path / 'vis'}", "device=cpu", *TINY_DETR],
                  tmp_path, fails=True)  # fmt: skip
    assert f"input={image}: none of the 1 image file(s) could be read" in out
    assert f"cannot read image {image} (" in out and "Fix: give input=" in out
    assert "Traceback" not in out  # the message alone (an ExplainedError)
    assert not list((tmp_path / "vis").glob("*.png"))


def test_callback_saves_attention_pngs_every_n_epochs_without_a_logger(tmp_path) -> None:
    lit = tiny_lit()
    callback = AttentionMapLogger(every_n_epochs=1, num_images=2, score_threshold=0.0)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=2,
                            callbacks=[callback])  # fmt: skip
    trainer.fit(lit, train_dataloaders=loader(1), val_dataloaders=loader(2, offset=10))
    files = sorted(p.name for p in (tmp_path / "attention_maps").iterdir())
    assert files == ["epoch000_0_decoder.png", "epoch000_0_encoder.png",
                     "epoch000_1_decoder.png", "epoch000_1_encoder.png"]  # fmt: skip
    assert not AttentionMapLogger()._active(trainer)  # the config default (0) draws nothing


def test_visualize_refuses_an_output_dir_holding_earlier_figures(tmp_path) -> None:
    """A second run into the same output_dir used to overwrite the first one's figures (and its
    .hydra/ config) without a word, or mix its figures with them."""
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(image)
    release = official_release(tmp_path / "detr-tiny.pth")
    vis = tmp_path / "vis"
    args = ["experiment=r50", f"model.pretrained={release}", f"input={image}",
            f"output_dir={vis}", "device=cpu", *TINY_DETR]  # fmt: skip
    run_cli("visualize", args, tmp_path)
    before = {p: p.read_bytes() for p in vis.rglob("*") if p.is_file()}
    assert vis / "photo_decoder.png" in before
    out = run_cli("visualize", [*args, "max_objects=1"], tmp_path, fails=True)
    assert f"output_dir={vis} already holds photo_decoder.png" in out and "Fix:" in out
    assert "Traceback" not in out
    assert {p: p.read_bytes() for p in vis.rglob("*") if p.is_file()} == before  # untouched
