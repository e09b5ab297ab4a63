"""``last.ckpt`` always holds the latest state: when val/AP stalls, and every N steps from the
first step on; the best-by-AP file stays separate."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lit import loader, quiet_trainer, tiny_lit

from detr_lightning.checkpointing.callback import BestAndLastCheckpoint

ARGS = dict(filename="epoch{epoch:03d}-AP{val/AP:.4f}", auto_insert_metric_name=False,
            monitor="val/AP", mode="max", save_top_k=1)  # fmt: skip


def _stalled_ap_lit():
    """A tiny LitDETR whose val/AP is 0.25 at every validation (it never improves)."""
    lit = tiny_lit()

    def constant_ap() -> None:
        lit.val_map.reset()
        lit.log("val/AP", 0.25)

    lit.on_validation_epoch_end = constant_ap
    return lit


def _fit(tmp_path, callback, epochs: int = 3, batches: int = 1, ckpt_path=None) -> L.Trainer:
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, callbacks=[callback],
                            enable_checkpointing=True, limit_val_batches=1)  # fmt: skip
    trainer.fit(_stalled_ap_lit(), train_dataloaders=loader(batches),
                val_dataloaders=loader(1, offset=50), ckpt_path=ckpt_path)  # fmt: skip
    return trainer


def _step(path) -> int:
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


def test_last_ckpt_holds_the_final_step_when_ap_stalls(tmp_path) -> None:
    cb = BestAndLastCheckpoint(dirpath=tmp_path / "ckpt", **ARGS)
    trainer = _fit(tmp_path, cb)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["epoch000-AP0.2500.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 and last["epoch"] == 2  # the final state, not the best's
    assert _step(tmp_path / "ckpt" / "epoch000-AP0.2500.ckpt") == 1
    # train.py tests best_model_path; the non-finite guard names last_model_path.
    assert trainer.checkpoint_callback is cb
    assert cb.best_model_path.endswith("epoch000-AP0.2500.ckpt")
    assert cb.last_model_path.endswith("last.ckpt") and cb.last_written_step == 3


def test_without_a_monitor_the_tested_checkpoint_is_the_final_epochs(tmp_path) -> None:
    # The paper presets (monitor: null) report the final model, as the paper and the official
    # model zoo do: train.py tests best_model_path, which is then the last validated epoch.
    cb = BestAndLastCheckpoint(dirpath=tmp_path / "ckpt", **{**ARGS, "monitor": None})
    _fit(tmp_path, cb)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["epoch002-AP0.2500.ckpt", "last.ckpt"]
    assert cb.best_model_path.endswith("epoch002-AP0.2500.ckpt")
    assert _step(cb.best_model_path) == 3


@pytest.mark.slow  # documents the Lightning behaviour the callback replaces
def test_stock_model_checkpoint_leaves_last_ckpt_stale(tmp_path) -> None:
    """What the callback fixes (Lightning 2.6): last.ckpt only moves with a new best."""
    _fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, **ARGS))
    assert _step(tmp_path / "ckpt" / "last.ckpt") == 1


class _Probe(L.Callback):
    """Before the third batch: the step held by last.ckpt and the files present."""

    def __init__(self, folder) -> None:
        self.folder, self.seen = folder, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 2:
            names = sorted(p.name for p in self.folder.iterdir())
            self.seen[trainer.global_step] = (_step(self.folder / "last.ckpt"), names)


def test_every_n_train_steps_writes_last_before_the_first_validation(tmp_path) -> None:
    folder = tmp_path / "ckpt"
    cb = BestAndLastCheckpoint(dirpath=folder, every_n_train_steps=2, **ARGS)
    probe = _Probe(folder)
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[probe, cb],
                            enable_checkpointing=True, limit_val_batches=1)  # fmt: skip
    trainer.fit(_stalled_ap_lit(), train_dataloaders=loader(3),
                val_dataloaders=loader(1, offset=50))  # fmt: skip
    assert probe.seen == {2: (2, ["last.ckpt"])}  # written although there is no val/AP yet
    assert sorted(p.name for p in folder.iterdir()) == ["epoch000-AP0.2500.ckpt", "last.ckpt"]
    assert _step(folder / "last.ckpt") == 3


def test_evaluating_a_checkpoint_keeps_the_run_bookkeeping_out(tmp_path) -> None:
    """eval / predict of a run's checkpoint from another folder: no "dirpath has changed"
    warning, and nothing of the training run's top-k list adopted; a resumed fit restores it."""
    trained = BestAndLastCheckpoint(dirpath=tmp_path / "run", **ARGS)
    _fit(tmp_path, trained, epochs=1)
    ckpt = str(tmp_path / "run" / "last.ckpt")

    evaluating = BestAndLastCheckpoint(dirpath=tmp_path / "eval", **ARGS)
    trainer = quiet_trainer(tmp_path, callbacks=[evaluating], enable_checkpointing=True,
                            limit_test_batches=1)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.test(_stalled_ap_lit(), dataloaders=loader(1, offset=50), ckpt_path=ckpt)
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert evaluating.best_model_path == "" and evaluating.best_k_models == {}
    assert not (tmp_path / "eval").exists()

    resumed = BestAndLastCheckpoint(dirpath=tmp_path / "run", **ARGS)
    _fit(tmp_path / "resume", resumed, epochs=2, ckpt_path=ckpt)
    assert trained.best_model_path in resumed.best_k_models


def _ap_lit(values: dict[int, float]):
    """A tiny LitDETR whose val/AP at epoch e is ``values[e]``."""
    lit = tiny_lit()

    def scripted_ap() -> None:
        lit.val_map.reset()
        lit.log("val/AP", values[lit.current_epoch])

    lit.on_validation_epoch_end = scripted_ap
    return lit


def _fit_ap(root, folder, values: dict[int, float], ckpt_path=None) -> BestAndLastCheckpoint:
    cb = BestAndLastCheckpoint(dirpath=folder, **ARGS)
    trainer = quiet_trainer(root, max_epochs=max(values) + 1, callbacks=[cb],
                            enable_checkpointing=True, limit_val_batches=1)  # fmt: skip
    trainer.fit(_ap_lit(values), train_dataloaders=loader(1),
                val_dataloaders=loader(1, offset=50), ckpt_path=ckpt_path)  # fmt: skip
    return cb


def test_resume_into_a_new_folder_keeps_the_runs_best(tmp_path) -> None:
    """ckpt_path=last from a new run directory: "best" (what train.py tests) stays the run's
    best, not the best since the resume; a better one replaces it; no earlier file is deleted."""
    first = tmp_path / "first"
    _fit_ap(tmp_path, first, {0: 0.5, 1: 0.3})
    before = sorted(p.name for p in first.iterdir())
    assert before == ["epoch000-AP0.5000.ckpt", "last.ckpt"]

    worse = _fit_ap(tmp_path, tmp_path / "worse", {2: 0.2, 3: 0.1}, first / "last.ckpt")
    assert worse.best_model_path == str(first / "epoch000-AP0.5000.ckpt")
    assert float(worse.best_model_score) == 0.5
    assert sorted(p.name for p in (tmp_path / "worse").iterdir()) == ["last.ckpt"]

    better = _fit_ap(tmp_path, tmp_path / "better", {2: 0.2, 3: 0.9}, first / "last.ckpt")
    assert better.best_model_path == str(tmp_path / "better" / "epoch003-AP0.9000.ckpt")
    assert sorted(p.name for p in first.iterdir()) == before  # outside its folder: kept


def test_resume_whose_earlier_best_is_gone_warns_with_its_path(tmp_path, caplog) -> None:
    first = tmp_path / "first"
    _fit_ap(tmp_path, first, {0: 0.5, 1: 0.3})
    (first / "epoch000-AP0.5000.ckpt").unlink()
    with caplog.at_level("WARNING"):
        cb = _fit_ap(tmp_path, tmp_path / "next", {2: 0.2}, first / "last.ckpt")
    assert f"best val/AP so far (0.5000) comes from {first / 'epoch000-AP0.5000.ckpt'}, which " \
        "no longer exists" in caplog.text  # fmt: skip
    assert cb.best_model_path == str(tmp_path / "next" / "epoch002-AP0.2000.ckpt")


@pytest.mark.parametrize(("world_size", "writes"), [(1, True), (2, False)])
def test_a_bad_image_writes_last_ckpt_only_without_ddp(tmp_path, world_size, writes) -> None:
    """A file that fails to decode fails on the one DDP rank that reads it, while the others
    are inside the step's collectives: a save there (Lightning's barrier) hung the job (2 gloo
    ranks, a bad image in rank 1's second batch: no exit in 3 minutes). Under DDP the rank
    raises at once and the others fail with it; alone, last.ckpt keeps the step."""
    from types import SimpleNamespace

    from detr_lightning.data.errors import ImageLoadError

    callback = BestAndLastCheckpoint(dirpath=tmp_path, monitor="val/AP", mode="max")
    written = []
    callback.write_last = written.append  # type: ignore[method-assign]
    trainer = SimpleNamespace(
        world_size=world_size, validating=False, sanity_checking=False, global_step=3
    )
    callback.on_exception(trainer, None, ImageLoadError("Cannot decode image x.jpg"))
    assert bool(written) == writes


def test_resume_in_its_own_folder_whose_best_is_gone_does_not_name_it_best(tmp_path) -> None:
    """A sweep job resumed in its own folder (``ckpt_path=auto hydra.sweep.dir=...``) whose best
    file was deleted since: the final test must not load the missing file (it failed after
    training with Lightning's FileNotFoundError)."""
    first = tmp_path / "job"
    _fit_ap(tmp_path, first, {0: 0.5, 1: 0.3})
    (first / "epoch000-AP0.5000.ckpt").unlink()
    cb = _fit_ap(tmp_path, first, {2: 0.2}, first / "last.ckpt")
    assert cb.best_model_path == "" or (tmp_path / cb.best_model_path).is_file(), cb.best_model_path
