"""Helpers of the fault-tolerance tests (resume, atomic checkpoints, divergence, config checks):
subprocess runs, probe callbacks.

Importable by name in the CLI subprocesses too (``run`` puts this folder on PYTHONPATH), so the
callbacks below can be added with ``+callbacks.NAME._target_=reliability_support.CLASS``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import warm_cli
from cli import cli_env

SUPPORT = Path(__file__).resolve().parent


def run(
    module: str,
    args: list[str],
    cwd: Path,
    timeout: int = 600,
    env: dict | None = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """``python -m detr_lightning.<module> args`` in ``cwd`` (forked from a warm interpreter:
    support/warm_cli.py, or a new one with ``fresh``); the return code is not checked."""
    paths = [str(SUPPORT), os.environ.get("PYTHONPATH", "")]
    full_env = cli_env(PYTHONPATH=os.pathsep.join(p for p in paths if p), **(env or {}))
    return warm_cli.run(f"detr_lightning.{module}", args, cwd, full_env, timeout, fresh)


def stopped_run(args: list[str], cwd: Path, step: int, epoch: int, during: str,
                signal_name: str = "SIGTERM", status: int = 143):  # fmt: skip
    """A training run with ``args`` in ``cwd`` that a signal stops (its callback in ``args``):
    checks the exit ``status`` and the one line naming ``signal_name``, the step, the epoch and
    last.ckpt. Returns (output, run dir, last.ckpt)."""
    stopped = run("train", args, cwd)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == status, out[-3000:]
    (run_dir,) = (cwd / "outputs" / "shapes").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (
        f"{signal_name}: training stopped during {during} at global step {step} (epoch {epoch}); "
        f"last.ckpt (global step {step}) is {last}. To resume, rerun the command with "
        "ckpt_path=last." in out
    )
    assert out.count(f"{signal_name}: training stopped") == 1
    return out, run_dir, last


def train_to_last_checkpoint(args: list[str], cwd: Path, timeout: int = 600) -> dict:
    """A training run with ``args`` in ``cwd`` (made if missing) that must succeed; its
    ``last.ckpt``, loaded."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = run("train", args, cwd, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    folder = re.findall(r"^run directory: (.+)$", proc.stdout, flags=re.M)[0]
    return torch.load(f"{folder}/checkpoints/last.ckpt", weights_only=True)


class KillAtStep(L.Callback):
    """SIGKILLs its own process right after optimizer step ``step``: no handler, no cleanup, as
    the OOM killer or a pre-empted node would. Runs before the checkpoint callbacks (Lightning
    orders those last), so the save due at that step is lost too: the worst case."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


class ResumeProbe(L.Callback):
    """Writes the restored optimizer and scheduler state to ``path`` (json) at train start."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        opt = trainer.optimizers[0]
        steps = sorted({float(s["step"]) for s in opt.state_dict()["state"].values()})
        sched = trainer.lr_scheduler_configs[0].scheduler
        info = {"global_step": trainer.global_step, "adam_steps": steps,
                "sched_last_epoch": sched.last_epoch,
                "lrs": [g["lr"] for g in opt.param_groups]}  # fmt: skip
        Path(self.path).write_text(json.dumps(info))


class WeightSpy(L.Callback):
    """Records the detector's weights when fitting starts, when it ends and when testing starts
    (class-level, so a test can read what an in-process ``train(cfg)`` saw)."""

    seen: dict[str, dict[str, torch.Tensor]] = {}

    def _keep(self, name: str, pl_module: L.LightningModule) -> None:
        WeightSpy.seen[name] = {
            k: v.detach().clone() for k, v in pl_module.net.state_dict().items()
        }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep("fit_start", pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep("train_end", pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep("test_start", pl_module)


class TermAtStep(L.Callback):
    """Sends SIGTERM to its own process after optimizer step ``step``, as a scheduler
    pre-empting the job (``scancel``, ``docker stop``) would; Lightning stops at the batch's end.
    Under DDP every rank has this callback, so each rank signals itself at that step (what
    ``scancel`` does: SIGTERM to every task), or only rank ``rank``. With ``mid_step`` the signal
    comes during the batch that makes step ``step``, before its backward pass, as a scheduler's
    signal landing mid-step on one rank would."""

    def __init__(self, step: int, rank: int | None = None, mid_step: bool = False) -> None:
        self.step, self.rank, self.mid_step, self.sent = step, rank, mid_step, False

    def _maybe_send(self, trainer: L.Trainer, steps_done: int) -> None:
        if self.sent or steps_done < self.step:
            return
        if self.rank is None or trainer.global_rank == self.rank:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_before_backward(self, trainer: L.Trainer, *args: Any) -> None:
        if self.mid_step:
            self._maybe_send(trainer, trainer.global_step + 1)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.mid_step:
            self._maybe_send(trainer, trainer.global_step)


def _descendants(pid: int) -> list[int]:
    """The processes started by ``pid`` and by those, recursively (Linux ``/proc``)."""
    direct = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
              for child in (task / "children").read_text().split()]  # fmt: skip
    return [p for child in direct for p in (child, *_descendants(child))]


class CtrlCAtStep(L.Callback):
    """After optimizer step ``step``, rank 0 sends SIGINT to its own process and every process
    it started (the data workers; under DDP the other ranks and theirs), once each, as a
    terminal's Ctrl-C reaches every process of the foreground group; with ``again``, a second
    Ctrl-C to its own process half a second later (the impatient user). Records the other
    processes' pids in ``workers.json`` (in the working directory) and those alive half a second
    after the signal."""

    def __init__(self, step: int, again: bool = False) -> None:
        self.step, self.again, self.sent = step, again, False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        import time

        if trainer.global_step < self.step or self.sent or trainer.global_rank != 0:
            return
        self.sent = True
        others = _descendants(os.getpid())
        for pid in [os.getpid(), *others]:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.5)  # a process ended by the signal is gone by then
        alive = [pid for pid in others if Path(f"/proc/{pid}").exists()]
        Path("workers.json").write_text(json.dumps({"workers": others, "alive": alive}))
        if self.again:
            os.kill(os.getpid(), signal.SIGINT)


class TermInValidation(L.Callback):
    """Sends SIGTERM to its own process after the first batch of the first validation of
    fitting (not the sanity check; with ``sanity_check`` of the sanity check), as a pre-emption
    arriving while the run validates; Lightning stops at that validation batch's end. Under DDP
    every rank signals itself, or only rank ``rank``."""

    def __init__(self, rank: int | None = None, sanity_check: bool = False) -> None:
        self.rank, self.sanity_check, self.sent, self.step = rank, sanity_check, False, None

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.sanity_checking != self.sanity_check or self.sent:
            return
        self.sent, self.step = True, trainer.global_step
        if self.rank is None or trainer.global_rank == self.rank:
            os.kill(os.getpid(), signal.SIGTERM)


class TermInTest(L.Callback):
    """Sends SIGTERM to its own process after the first test batch (an evaluation job
    pre-empted or cancelled)."""

    def __init__(self) -> None:
        self.sent = False

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


class StopAfterEpoch(L.Callback):
    """Stops fitting after epoch ``epoch`` has ended (its checkpoints written), as a run stopped
    between epochs would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True


class RngProbe(L.Callback):
    """Saves each rank's random generators' states (``rng_states.capture``) when fitting ends,
    to ``folder/rank<r>.pt``: what a resumed run's ranks must have continued to."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from detr_lightning.checkpointing.rng_states import capture

        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(capture(), self.folder / f"rank{trainer.global_rank}.pt")


def seen_images_run(shapes_dir: str | Path, seen: str | Path) -> list[str]:
    """The overrides of a one-epoch smoke run on ``shapes_dir`` (TINY model, no test) whose
    :class:`SeenImages` writes to ``seen``."""
    from cli import TINY

    return ["schedule=smoke", f"paths.shapes_dir={shapes_dir}", *TINY, "test=false",
            "trainer.limit_train_batches=1.0", "trainer.max_epochs=1",
            "+callbacks.seen._target_=reliability_support.SeenImages",
            f"+callbacks.seen.path={seen}"]  # fmt: skip


class SeenImages(L.Callback):
    """Appends ``[epoch, image id]`` of every training image to ``path`` (json lines)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.path, "a") as f:
            for t in batch.targets:
                f.write(f"[{trainer.current_epoch}, {int(t['image_id'])}]\n")


class StepImages(L.Callback):
    """Appends ``[epoch, image ids]`` of every optimizer step to ``path`` (json lines): the
    images of the batches whose gradients that step applied (under
    ``trainer.accumulate_grad_batches``, the batches since the previous step)."""

    def __init__(self, path: str) -> None:
        self.path, self.pending = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.pending += [int(t["image_id"]) for t in batch.targets]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps([trainer.current_epoch, self.pending]) + "\n")
        self.pending = []


class TermAfterBatch(L.Callback):
    """Sends SIGTERM to its own process after training batch ``batch`` (1-based count of the
    fit's batches), between optimizer steps or, under ``trainer.accumulate_grad_batches``, in
    the middle of one; Lightning stops at that batch's end."""

    def __init__(self, batch: int) -> None:
        self.batch, self.count = batch, 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.count += 1
        if self.count == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)
