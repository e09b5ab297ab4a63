"""DDP on CPU (gloo): training runs, its evaluation equals the single-process one exactly, and a
resume from an epoch end continues every rank's random streams."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cli import TINY, TINY_WITH_BAR, run_cli, run_dirs
from ddp_workers import start_method
from reliability_support import run, train_to_last_checkpoint

from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.evaluation.coco import METRIC_NAMES


def test_a_local_sweep_of_ddp_jobs_stops_before_starting_processes(tmp_path) -> None:
    """Under -m Lightning would start rank 1 by running the whole sweep again: the first job
    stops with the fix before any process starts (no "MEMBER" line, no checkpoint)."""
    root = generate_shapes_dataset(tmp_path / "shapes", train=4, val=2)
    out = run_cli("train", ["-m", "trainer=ddp_cpu", "schedule=smoke", f"paths.shapes_dir={root}",
                            *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", "seed=1,2"],
                  tmp_path, fails=True)  # fmt: skip
    assert "a multirun (-m) job with 2 DDP processes" in out and "hydra/launcher=slurm" in out
    assert "MEMBER" not in out and not list((tmp_path / "sweep").rglob("*.ckpt"))


def test_ddp_cpu_training_and_evaluation_match_single_process(tmp_path) -> None:
    # 5 val images in batches of 2 on 2 ranks: rank 0 evaluates [0 1] [4], rank 1 [2 3] and a
    # repeat of [0 1] (data/eval_sampler.py). The smoke schedule's 2 test batches per rank are
    # lifted to the whole split, as the single-process eval below sees it.
    root = generate_shapes_dataset(tmp_path / "shapes", train=8, val=5)
    common = [f"paths.shapes_dir={root}", "data.val_batch_size=2"]
    whole = ["trainer.limit_test_batches=1.0"]
    # With the progress bar, as users run: rank 0's alone reduces the epoch metrics in its
    # epoch-end hook, and a collective of ours meeting those reductions hung every rank
    # (utils/distributed.py settle_epoch_metrics).
    out = run_cli("train", ["trainer=ddp_cpu", "schedule=smoke", *whole, *TINY_WITH_BAR, *common],
                  tmp_path, timeout=300)  # fmt: skip
    assert "MEMBER: 2/2" in out, out[-3000:]
    ddp_dir = sorted(set(run_dirs(out)))
    assert len(ddp_dir) == 1, "rank 1 must not print its own run directory"
    ddp = json.loads((ddp_dir[0] / "metrics.json").read_text())
    single_out = run_cli("eval", [f"ckpt_path={ddp['run']['checkpoint']}", *TINY, *common],
                         tmp_path)  # fmt: skip
    single = json.loads((run_dirs(single_out)[0] / "metrics.json").read_text())
    keys = list(METRIC_NAMES.values())
    assert {k: ddp[k] for k in keys} == {k: single[k] for k in keys}
    # The test losses too: each batch once (not rank 1's repeat of [0 1]), normalised by its
    # own boxes, weighted by images as one process does (evaluation/batch_losses.py).
    losses = [_test_losses(run_dirs(o)[0]) for o in (out, single_out)]
    assert losses[0].keys() == losses[1].keys() and "test/loss" in losses[0]
    assert losses[0] == losses[1]
    # One step leaves every AP and AR at 0 here: this checks the DDP run end to end (both ranks,
    # one run directory, the checkpoint, the test loop). The cross-rank merge of detections is
    # checked on a non-trivial AP in test_metric_gathered_over_ranks_equals_cocoeval.
    assert ddp["run"]["global_step"] == 1  # 8 images / 2 ranks / batch 4: one step per rank
    # The step's logged loss is the mean over the ranks, as the epoch's synced one (one step
    # here): not rank 0's own share (LitDETR.training_step logs them with sync_dist).
    train = _logged(ddp_dir[0], ("train/loss", "train_epoch/loss", "train/loss_bbox",
                                 "train_epoch/loss_bbox"))  # fmt: skip
    assert train["train/loss"] == pytest.approx(train["train_epoch/loss"], rel=1e-6)
    assert train["train/loss_bbox"] == pytest.approx(train["train_epoch/loss_bbox"], rel=1e-6)


def _test_losses(run_dir) -> dict[str, float]:
    """The ``test/loss*`` values of a run's CSV log (Lightning writes them in one row)."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for r in rows for k, v in r.items() if k.startswith("test/loss") and v}


def _logged(run_dir, keys) -> dict[str, float]:
    """The last value of each of ``keys`` in a run's CSV log."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for r in rows for k, v in r.items() if k in keys and v}


def _num_boxes_worker(rank: int, init_file: str, result: torch.Tensor) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    from lit import fake_batch, tiny_lit

    lit = tiny_lit()
    targets = fake_batch(rank, batch=1 + 2 * rank).targets  # rank 0: 1 box, rank 1: 1+2+3 boxes
    result[rank] = lit._global_num_boxes(targets)
    dist.destroy_process_group()


def test_num_boxes_is_averaged_over_processes() -> None:
    result = torch.zeros(2).share_memory_()
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(_num_boxes_worker, args=(os.path.join(d, "init"), result), nprocs=2,
                           start_method=start_method())  # fmt: skip
    assert result.tolist() == [3.5, 3.5]  # (1 + 6) / 2 on both ranks


def _metric_worker(
    rank: int, init_file: str, folder: str, ann: str, out: torch.Tensor, whole: bool
) -> None:
    """One rank: evaluate its shard of fixed detections: Lightning's DistributedSampler's (padded
    with a repeat to equal counts) or, ``whole``, whole batches of 2 (4 images and 3)."""
    import contextlib
    import io

    from cocoeval import fake_detections
    from pycocotools.coco import COCO
    from torch.utils.data import DistributedSampler

    from detr_lightning.data.coco import CocoDetectionDataset
    from detr_lightning.data.collate import collate
    from detr_lightning.data.eval_sampler import WholeBatchDistributedSampler
    from detr_lightning.data.transforms import make_eval_transforms
    from detr_lightning.evaluation.coco import CocoBoxAP, metric_targets

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ds = CocoDetectionDataset(folder, ann, make_eval_transforms(96, 200), train=False)
    with contextlib.redirect_stdout(io.StringIO()):
        dets = fake_detections(COCO(ann))
    to_label = {c: i for i, c in enumerate(ds.label_to_category_id)}
    metric = CocoBoxAP()
    if whole:
        indices = list(WholeBatchDistributedSampler(ds, 2, num_replicas=2, rank=rank))
        assert len(indices) == (4, 3)[rank]
    else:
        indices = list(DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=False))
    for i in indices:
        b = collate([ds[i]])
        mine = [d for d in dets if d["image_id"] == int(b.targets[0]["image_id"])]
        xywh = torch.tensor([d["bbox"] for d in mine]).view(-1, 4)
        pred = {"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                "scores": torch.tensor([d["score"] for d in mine]),
                "labels": torch.tensor([to_label[d["category_id"]] for d in mine])}  # fmt: skip
        metric.update([pred], metric_targets(b.targets))
    values = metric.compute()
    out[rank] = torch.tensor([float(values[k]) for k in METRIC_NAMES.values()])
    dist.destroy_process_group()


@pytest.mark.parametrize("whole", [False, True])
def test_metric_gathered_over_ranks_equals_cocoeval(tmp_path, whole: bool) -> None:
    """Real 2-process gather of a non-trivial evaluation, 7 images: one padded repeat, or 4 and 3
    images on the ranks (whole batches; torchmetrics' own gather needs equal counts)."""
    import contextlib
    import io

    from cocoeval import fake_detections, pycocotools_stats
    from pycocotools.coco import COCO

    root = generate_shapes_dataset(tmp_path / "shapes", train=1, val=7)
    folder, ann = str(root / "val"), str(root / "annotations" / "instances_val.json")
    out = torch.zeros(2, len(METRIC_NAMES)).share_memory_()
    args = (str(tmp_path / "init"), folder, ann, out, whole)
    mp.start_processes(_metric_worker, args=args, nprocs=2, start_method=start_method())
    with contextlib.redirect_stdout(io.StringIO()):
        ref = pycocotools_stats(ann, fake_detections(COCO(ann)))
    assert ref[0] > 0.2
    assert torch.equal(out[0], out[1])
    assert out[0].tolist() == torch.tensor(ref, dtype=torch.float32).tolist()


def _rng_resume_worker(rank: int, init_file: str, ckpt: str, out: torch.Tensor) -> None:
    """One rank of a 2-process run: epoch 0, its epoch-end checkpoint (every rank dumps, rank 0
    writes, as Lightning's ``save_checkpoint``), epoch 1's draws; then, as a resumed process, epoch
    1's draws after the restore. ``out[resumed, rank]``: the draws."""
    from detr_lightning.checkpointing.rng_states import RngStates

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    trainer = SimpleNamespace(global_rank=rank, world_size=2, callback_metrics={})
    for resumed in (False, True):
        torch.manual_seed(0)  # seed_everything before the launch: alike on every rank
        callback = RngStates()
        callback.setup(trainer, None, "fit")
        if resumed:
            saved = torch.load(ckpt, weights_only=True)["callbacks"]["RngStates"]
            callback.load_state_dict(saved)
            torch.rand(7)  # what building the trainer and the sanity check draw
        else:
            callback.on_train_epoch_start(trainer, None)
            callback.on_train_batch_start(trainer, None, None, 0)
            torch.rand(5)  # epoch 0's dropout, augmentation, denoising
            callback.on_train_epoch_end(trainer, None)
            states = callback.state_dict()
            if rank == 0:
                torch.save({"callbacks": {"RngStates": states}}, ckpt)
            dist.barrier()
        callback.on_train_epoch_start(trainer, None)
        out[int(resumed), rank] = torch.rand(4)
    dist.destroy_process_group()


def test_a_ddp_resume_from_an_epoch_end_continues_every_ranks_own_streams(tmp_path) -> None:
    """Two gloo processes: each rank's draws after the resume are the uninterrupted run's (with
    rank 0's states only, rank 1 derived new ones)."""
    out = torch.zeros(2, 2, 4).share_memory_()
    args = (str(tmp_path / "init"), str(tmp_path / "last.ckpt"), out)
    mp.start_processes(_rng_resume_worker, args=args, nprocs=2, start_method=start_method())
    assert not torch.equal(out[0, 0], out[0, 1])  # each rank its own streams
    assert torch.equal(out[1, 0], out[0, 0])
    assert torch.equal(out[1, 1], out[0, 1])


def _train_ddp(args: list[str], cwd: Path) -> dict:
    """A ``trainer=ddp_cpu`` training run in ``cwd``; its last checkpoint."""
    return train_to_last_checkpoint(args, cwd, timeout=300)


@pytest.mark.slow  # three 2-process CLI runs each: 70 to 120 s on 2 cores
@pytest.mark.parametrize(
    "stop",
    [
        "epoch-end",
        "mid-epoch-kill",
        "mid-epoch-sigterm-on-rank-1",
        "validation-sigterm-on-rank-1",
        "ctrl-c",
    ],  # fmt: skip
)
def test_a_ddp_run_resumed_after_a_stop_ends_as_the_uninterrupted_one(
    tmp_path, shapes_root, stop
) -> None:
    """The CLI under ``trainer=ddp_cpu``, stopped and resumed: every rank's generators end where
    the uninterrupted run's do, and so do the weights (rank 1's dropout and augmentation draws
    enter them through the averaged gradients). Stopped after epoch 0, or killed (SIGKILL, every
    rank) after step 2, the last of epoch 0, whose save is lost: the resume starts from the
    every-step ``last.ckpt`` of step 1, mid-epoch (each rank's batch position and its states). Or
    stopped by a SIGTERM that rank 1 alone receives during step 1 (no every-step saves): every
    rank stops after that step, and the ``last.ckpt`` written there holds every rank's states. Or
    by one that rank 1 alone receives during epoch 0's validation: every rank stops after that
    validation batch, with every rank's states at the end of step 2. Or by a Ctrl-C after step 1
    that reaches every process (both ranks and their data workers, as a terminal sends it)."""
    # As users run DDP: with the progress bar and persistent data workers (each sample's
    # augmentation is drawn from its own seed, data/sample_seeds.py).
    tiny = [a for a in TINY_WITH_BAR if a != "data.num_workers=0"]
    common = ["trainer=ddp_cpu", "schedule=smoke", f"paths.shapes_dir={shapes_root}", *tiny,
              "data.num_workers=1", "data.persistent_workers=true", "trainer.max_epochs=2",
              "test=false", "callbacks.model_checkpoint.every_n_train_steps=1"]  # fmt: skip

    def probe(name: str) -> list[str]:
        return ["+callbacks.rng_probe._target_=reliability_support.RngProbe",
                f"+callbacks.rng_probe.folder={tmp_path / name}"]  # fmt: skip

    straight = _train_ddp([*common, *probe("straight_rng")], tmp_path / "straight")
    if stop == "epoch-end":
        ends = ["+callbacks.stop._target_=reliability_support.StopAfterEpoch",
                "+callbacks.stop.epoch=0"]  # fmt: skip
        assert _train_ddp([*common, *ends], tmp_path / "stopped")["global_step"] == 2
    else:
        (tmp_path / "stopped").mkdir()
        if stop == "mid-epoch-kill":
            stops, code = ["+callbacks.kill._target_=reliability_support.KillAtStep",
                           "+callbacks.kill.step=2"], -9  # fmt: skip
        elif stop == "ctrl-c":
            stops, code = ["+callbacks.ctrl_c._target_=reliability_support.CtrlCAtStep",
                           "+callbacks.ctrl_c.step=1",
                           "callbacks.model_checkpoint.every_n_train_steps=null"], 130  # fmt: skip
        elif stop == "validation-sigterm-on-rank-1":
            stops, code = ["+callbacks.term._target_=reliability_support.TermInValidation",
                           "+callbacks.term.rank=1",
                           "callbacks.model_checkpoint.every_n_train_steps=null"], 143  # fmt: skip
        else:
            stops, code = ["+callbacks.term._target_=reliability_support.TermAtStep",
                           "+callbacks.term.step=1", "+callbacks.term.rank=1",
                           "+callbacks.term.mid_step=true",
                           "callbacks.model_checkpoint.every_n_train_steps=null"], 143  # fmt: skip
        stopped = run("train", [*common, *stops], tmp_path / "stopped", timeout=300)
        assert stopped.returncode == code, (stopped.stdout + stopped.stderr)[-3000:]
        (last,) = (tmp_path / "stopped").rglob("last.ckpt")
        saved = torch.load(last, weights_only=True)
        step = 2 if stop == "validation-sigterm-on-rank-1" else 1
        assert saved["global_step"] == step and len(saved["callbacks"]["RngStates"]["ranks"]) == 2
    resumed = _train_ddp([*common, *probe("resumed_rng"), "ckpt_path=last"], tmp_path / "stopped")
    assert resumed["global_step"] == straight["global_step"] == 4  # 2 steps an epoch per rank
    for rank in (0, 1):
        ends = [torch.load(tmp_path / f"{run}_rng" / f"rank{rank}.pt", weights_only=True)
                for run in ("straight", "resumed")]  # fmt: skip
        assert torch.equal(ends[0]["torch"], ends[1]["torch"]), rank
        assert ends[0]["numpy"] == ends[1]["numpy"] and ends[0]["python"] == ends[1]["python"]
    differing = [k for k, v in straight["state_dict"].items()
                 if not torch.equal(v, resumed["state_dict"][k])]  # fmt: skip
    assert differing == []
