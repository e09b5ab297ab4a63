"""Validation image logging and the wandb offline switch."""

from __future__ import annotations

import netrc
from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lit import fake_batch, tiny_lit
from torch.utils.data import DataLoader
from torchvision.io import decode_png

from detr_lightning import callbacks
from detr_lightning.callbacks import ElapsedTime, ValidationImageLogger, draw_detections
from detr_lightning.utils.loggers import resolve_wandb_offline, wandb_logger


def test_draw_detections_puts_boxes_where_they_belong() -> None:
    image = torch.zeros(3, 40, 60)  # normalised zeros = the ImageNet mean colour
    target = {"boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]]), "labels": torch.tensor([1]),
              "size": torch.tensor([40, 60]), "orig_size": torch.tensor([80, 120])}  # fmt: skip
    pred = {"boxes": torch.tensor([[0.0, 0.0, 40.0, 40.0]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1])}  # fmt: skip
    out = draw_detections(image, target, pred, category_ids=[7, 8])
    assert out.shape == (3, 40, 60) and out.dtype == torch.uint8
    green = (out[1] == 255) & (out[0] < 100)
    red = (out[0] == 255) & (out[1] < 100)
    # GT: cxcywh (0.5,0.5,0.5,0.5) on 60x40 -> x 15..45, y 10..30; pred: 0..40 px of a 120x80
    # original -> 0..20 px here (its label box may run right of it, in its top rows)
    assert green[10, 15:45].any() and green[30, 15:45].any() and not green[35:, :].any()
    assert red[14:21, 0].all() and red[14:21, 20].all() and red[20, :21].all()
    assert not red[21:, :].any() and not red[14:, 21:].any()


def test_image_logger_writes_pngs_without_wandb(tmp_path) -> None:
    lit = tiny_lit()
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", logger=CSVLogger(tmp_path), max_epochs=2,
        callbacks=[ValidationImageLogger(every_n_epochs=2, num_images=3, score_threshold=0.0)],
        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
        limit_train_batches=1,
    )  # fmt: skip
    batches = DataLoader([fake_batch(i) for i in range(2)], batch_size=None)
    trainer.fit(lit, train_dataloaders=batches, val_dataloaders=batches)
    files = sorted(p.name for p in (tmp_path / "val_images").iterdir())
    assert files == ["epoch001_0.png", "epoch001_1.png", "epoch001_2.png"]  # epoch 0 skipped
    assert decode_png(torch.frombuffer(bytearray((tmp_path / "val_images" / files[0]).read_bytes()),
                                       dtype=torch.uint8)).shape == (3, 64, 64)  # fmt: skip


def test_spaced_validations_still_get_the_images_after_each_window(tmp_path) -> None:
    """Validations every 3 epochs (as the wall-time budget may space them) and images every 4:
    the validation after epoch 4 (epoch 6) draws them, where (epoch + 1) % 4 never meets one."""
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", logger=CSVLogger(tmp_path), max_epochs=6,
        callbacks=[ValidationImageLogger(every_n_epochs=4, num_images=1, score_threshold=0.0)],
        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
        limit_train_batches=1, check_val_every_n_epoch=3,
    )  # fmt: skip
    batches = DataLoader([fake_batch(i) for i in range(2)], batch_size=None)
    trainer.fit(tiny_lit(), train_dataloaders=batches, val_dataloaders=batches)
    assert sorted(p.name for p in (tmp_path / "val_images").iterdir()) == ["epoch005_0.png"]


def test_wandb_goes_offline_without_credentials(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_offline("auto") is True
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    (tmp_path / "netrc").chmod(0o600)
    assert netrc.netrc(str(tmp_path / "netrc")).authenticators("api.wandb.ai")
    assert resolve_wandb_offline("auto") is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_offline("auto") is True
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_offline("auto") is False
    assert resolve_wandb_offline("offline") is True


def test_wandb_logger_offline_run_records_config_and_metrics(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = wandb_logger(project="detr-test", name="shapes", save_dir=str(tmp_path))
    logger.log_hyperparams({"model": {"lr": 1e-4}})
    logger.log_metrics({"val/AP_S": 0.1, "val/AP_L": 0.5}, step=1)
    logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_elapsed_time_goes_on_from_the_checkpoint_after_a_resume(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    first = ElapsedTime()
    first.on_fit_start(None, None)
    now[0] = 130.0
    state = first.state_dict()  # saved in the checkpoint
    assert state == {"elapsed_s": 30.0}
    resumed = ElapsedTime()  # another process, whose clock reads anything
    resumed.load_state_dict(state)
    now[0] = 5_000.0
    resumed.on_fit_start(None, None)
    now[0] = 5_010.0
    assert resumed.state_dict() == {"elapsed_s": 40.0}
