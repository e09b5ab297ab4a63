"""EpochStreams: a run resumed from a checkpoint written mid-epoch trains the interrupted epoch's
remaining batches in that epoch's order (not the epoch's first ones again), then whole epochs."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from lit import fake_batch, quiet_trainer, tiny_lit
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from detr_lightning.data.collate import Batch
from detr_lightning.data.epoch_sampler import EpochRandomSampler
from detr_lightning.data.epoch_streams import EpochStreams
from detr_lightning.data.resumable_batches import ResumableBatchSampler
from detr_lightning.data.sampler import AspectRatioGroupedBatchSampler

IMAGES, EPOCHS = 6, 2


class _Seen(L.Callback):
    """(epoch, image id) of every training batch; saves a checkpoint after step ``save_at``."""

    def __init__(self, save_at: int | None = None, path: str = "") -> None:
        self.seen: list[tuple[int, int]] = []
        self.save_at, self.path = save_at, path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append((trainer.current_epoch, int(batch.targets[0]["image_id"])))

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.save_at:
            trainer.save_checkpoint(self.path)


def _loader(kind: str, workers: int) -> DataLoader:
    data = [fake_batch(i, size=32) for i in range(IMAGES)]
    order = EpochRandomSampler(data, seed=3)
    batches = {
        "plain": lambda: ResumableBatchSampler(order, 1, drop_last=False),
        "grouped": lambda: AspectRatioGroupedBatchSampler(order, [i % 2 for i in range(IMAGES)], 1),
        "torch": lambda: BatchSampler(order, 1, drop_last=False),
    }[kind]()
    return DataLoader(data, batch_sampler=batches, collate_fn=lambda items: items[0],
                      num_workers=workers, generator=None)  # fmt: skip


def _fit(tmp_path, kind: str, workers: int, seen: _Seen, ckpt_path: str | None = None) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=EPOCHS, limit_val_batches=0,
                            callbacks=[seen, EpochStreams(seed=3)])  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=_loader(kind, workers), ckpt_path=ckpt_path)


@pytest.mark.parametrize(
    ("kind", "workers", "save_at"),
    [("plain", 0, 2), ("grouped", 0, 4), ("plain", 2, 8), ("plain", 0, IMAGES)],
    ids=["epoch0", "grouped-epoch0", "workers-epoch1", "epoch-end"],
)
def test_a_mid_epoch_resume_trains_the_remaining_batches_of_the_uninterrupted_run(
    tmp_path, kind: str, workers: int, save_at: int
) -> None:
    full = _Seen(save_at, str(tmp_path / "at.ckpt"))
    _fit(tmp_path / "full", kind, workers, full)
    assert len({i for e, i in full.seen if e == 0}) == IMAGES  # every image once an epoch
    resumed = _Seen()
    _fit(tmp_path / "resumed", kind, workers, resumed, ckpt_path=str(tmp_path / "at.ckpt"))
    # before the fix: the interrupted epoch's first batches again
    assert resumed.seen == full.seen[save_at:]


def test_a_batch_sampler_that_cannot_start_part_way_restarts_the_epoch_with_a_warning(
    tmp_path, caplog
) -> None:
    full = _Seen(2, str(tmp_path / "at.ckpt"))
    _fit(tmp_path / "full", "torch", 0, full)
    resumed = _Seen()
    _fit(tmp_path / "resumed", "torch", 0, resumed, ckpt_path=str(tmp_path / "at.ckpt"))
    assert "restart its order" in caplog.text
    epoch0 = [i for _, i in full.seen[: IMAGES - 2]]  # the epoch's first batches, again
    assert [i for _, i in resumed.seen[: IMAGES - 2]] == epoch0
    assert resumed.seen[IMAGES - 2 :] == full.seen[IMAGES:]


# Resumed with another batch size: the epoch goes on at the first image not trained


class _SeenAll(_Seen):
    """(epoch, image id) of every image of every training batch, and the epochs ended."""

    def __init__(self, save_at: int | None = None, path: str = "") -> None:
        super().__init__(save_at, path)
        self.ended: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.extend((trainer.current_epoch, int(t["image_id"])) for t in batch.targets)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.ended.append(trainer.current_epoch)


def _images_loader(size: int, images: int) -> DataLoader:
    data = [fake_batch(i, size=32, batch=1) for i in range(images)]
    order = EpochRandomSampler(data, seed=3)

    def collate(items):
        return Batch(torch.cat([b.pixel_values for b in items]),
                     torch.cat([b.pixel_mask for b in items]),
                     [b.targets[0] for b in items])  # fmt: skip

    return DataLoader(data, batch_sampler=ResumableBatchSampler(order, size, drop_last=False),
                      collate_fn=collate)  # fmt: skip


def _fit_images(tmp_path, size: int, seen: _SeenAll, ckpt_path=None, streams=None) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=EPOCHS, limit_val_batches=0,
                            callbacks=[seen, streams or EpochStreams(seed=3)])  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=_images_loader(size, 10), ckpt_path=ckpt_path)


@pytest.mark.parametrize(
    ("old", "save_at", "new"),
    [(2, 3, 4), (4, 1, 3), (3, 4, 2)],
    ids=["2-to-4", "4-to-3", "epoch-end-3-to-2"],
)
def test_a_mid_epoch_resume_at_another_batch_size_trains_each_image_of_the_epoch_once(
    tmp_path, caplog, old: int, save_at: int, new: int
) -> None:
    full = _SeenAll(save_at, str(tmp_path / "at.ckpt"))
    _fit_images(tmp_path / "full", old, full)
    trained = full.seen[: old * save_at]  # 3 x 4 batches: the whole epoch 0 of 10 images
    resumed = _SeenAll()
    with caplog.at_level("INFO"):
        _fit_images(tmp_path / "resumed", new, resumed, ckpt_path=str(tmp_path / "at.ckpt"))
    epoch0 = [i for e, i in full.seen if e == 0]
    # before, Lightning's count taken as batches of the new size: 2-to-4 skipped 12 images (6
    # trained), 4-to-3 skipped 3 (4 trained: one of them again)
    assert [i for e, i in resumed.seen if e == 0] == epoch0[len(trained) :]
    epoch1 = [i for e, i in full.seen if e == 1]
    # the next epoch is whole (epoch-end-3-to-2, before: its first batch only, Lightning's count
    # of 4 batches done kept for an epoch of 5)
    assert [i for e, i in resumed.seen if e == 1] == epoch1
    if save_at * old < 10:
        assert resumed.ended == [0, 1]
        assert "not trained before the stop" in caplog.text
    else:
        assert resumed.ended == [1]


def test_a_resumed_epoch_with_no_batch_left_at_the_new_layout_ends_without_training_again(
    tmp_path, caplog
) -> None:
    # 10 images at batch 1, saved after 9: resumed as rank 0 of 2 processes at batch 2 (its own
    # DistributedSampler, as Lightning makes under DDP), the last image cannot be shared by the
    # 2 ranks, so no batch of epoch 0 is left. Before, Lightning's count was set to the epoch's
    # 3 batches, which it takes as an epoch over before it started: it trained epoch 0 again.
    full = _SeenAll(9, str(tmp_path / "at.ckpt"))
    _fit_images(tmp_path / "full", 1, full)
    loader = _images_loader(2, 10)
    rank_0 = DistributedSampler(loader.dataset, num_replicas=2, rank=0, seed=3)
    loader = DataLoader(loader.dataset, batch_sampler=ResumableBatchSampler(rank_0, 2, False),
                        collate_fn=loader.collate_fn)  # fmt: skip
    resumed = _SeenAll()
    trainer = quiet_trainer(tmp_path / "resumed", max_epochs=EPOCHS, limit_val_batches=0,
                            callbacks=[resumed, EpochStreams(seed=3)])  # fmt: skip
    with caplog.at_level("INFO"):
        trainer.fit(tiny_lit(), train_dataloaders=loader, ckpt_path=str(tmp_path / "at.ckpt"))
    assert [e for e, _ in resumed.seen] == [1] * 5  # epoch 1: rank 0's 5 images
    assert resumed.ended == [0, 1] and trainer.global_step == 9 + 3
    assert "no batch of it is left at this layout (9 of its 10 images were trained" in caplog.text
    assert "1 image(s) of this epoch are left out" in caplog.text


def test_a_checkpoint_without_the_layout_resumes_at_the_batch_count(tmp_path) -> None:
    # written before the layout was recorded: its count of batches taken as batches of the new
    # size, as before (batch 2 stopped after 2 batches, resumed at batch 4: epoch 0's last 2)
    class Unrecorded(EpochStreams):
        def state_dict(self):
            return {}

    full = _SeenAll(2, str(tmp_path / "at.ckpt"))
    _fit_images(tmp_path / "full", 2, full, streams=Unrecorded(seed=3))
    resumed = _SeenAll()
    _fit_images(tmp_path / "resumed", 4, resumed, ckpt_path=str(tmp_path / "at.ckpt"))
    epoch0 = [i for e, i in full.seen if e == 0]
    assert [i for e, i in resumed.seen if e == 0] == epoch0[8:]
    assert [i for e, i in resumed.seen if e == 1] == [i for e, i in full.seen if e == 1]


# Resumed at another layout under trainer.accumulate_grad_batches or trainer.limit_train_batches:
# which images each optimizer step trains, against the epoch's order (EpochRandomSampler, seed 3)


class _Steps(_SeenAll):
    """The image ids of every optimizer step (``steps``: (epoch, ids)); saves a checkpoint after
    the fit's batch ``save_after`` (mid-step under accumulation, as a SIGTERM can)."""

    def __init__(self, save_after: int | None = None, path: str = "") -> None:
        super().__init__(None, path)
        self.save_after, self.batches = save_after, 0
        self.pending: list[int] = []
        self.steps: list[tuple[int, list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self.pending += [int(t["image_id"]) for t in batch.targets]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append((trainer.current_epoch, self.pending))
        self.pending = []

    def on_train_batch_end(self, trainer, *args) -> None:
        self.batches += 1
        if self.batches == self.save_after:
            trainer.save_checkpoint(self.path)


def _order(epoch: int, images: int = 12) -> list[int]:
    """Epoch ``epoch``'s image ids in their order (``fake_batch(i)``'s id is ``100 * i``)."""
    sampler = EpochRandomSampler(range(images), seed=3)
    sampler.set_epoch(epoch)
    return [100 * i for i in sampler]


def _fit_steps(tmp_path, size: int, steps: _Steps, ckpt_path=None, epochs=1, **trainer_args):
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, limit_val_batches=0,
                            callbacks=[steps, EpochStreams(seed=3)], **trainer_args)  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=_images_loader(size, 12), ckpt_path=ckpt_path)


# (saved after batch, new batch size, the resumed steps' bounds in the order, the first step's
# batches where the log line says so)
_ACCUMULATED = [(2, 2, (4, 8, 12), None), (3, 2, (6, 8, 12), None),
                (2, 3, (4, 7, 12), 1), (3, 4, (6, 10, 12), 1)]  # fmt: skip


@pytest.mark.parametrize(
    ("stop_after", "new", "cuts", "note"),
    _ACCUMULATED,
    ids=["same-between-steps", "same-mid-step", "3-between-steps", "4-mid-step"],
)
def test_the_first_step_after_a_resume_at_another_batch_size_accumulates_to_lightnings_count(
    tmp_path, caplog, stop_after: int, new: int, cuts: tuple[int, ...], note: int | None
) -> None:
    # 12 images at batch 2, trainer.accumulate_grad_batches=2: steps of 4 images, saved after
    # batch 2 (step 1) or 3 (mid-step 2). Lightning steps where its count of the epoch's batches
    # reaches a multiple of 2. The same layout (its baseline): whole steps after a save between
    # steps; after one mid-step, the step's other batch (the saved one's gradient is lost, its
    # images count as trained). Batch 3 after 4 images: 4 batches less the 3 left ([3, 3, 2])
    # counted as done, so the first step is 1 batch, then [3, 2] (a run at batch 3: [6, 6]).
    # Batch 4 after 6 images: 3 less the 2 left ([4, 2]), 1 done: steps of 4 then 2.
    order = _order(0)
    full = _Steps(stop_after, str(tmp_path / "at.ckpt"))
    _fit_steps(tmp_path / "full", 2, full, accumulate_grad_batches=2)
    assert full.steps == [(0, order[0:4]), (0, order[4:8]), (0, order[8:12])]
    resumed = _Steps()
    with caplog.at_level("INFO"):
        _fit_steps(tmp_path / "resumed", new, resumed, str(tmp_path / "at.ckpt"),
                   accumulate_grad_batches=2)  # fmt: skip
    assert resumed.steps == [(0, order[a:b]) for a, b in itertools.pairwise(cuts)]
    said = f"the first optimizer step after it accumulates {note} of its trainer."
    assert (said in caplog.text) == (note is not None), caplog.text


# (saved after batch, new batch size and limit, its batches trained in the resumed epoch, the
# log line's words)
_LIMITED = [
    (2, 1, 7, 3, "3 batches on each process (trainer.limit_train_batches ends its epochs at 7 "
                 "batches, 4 counted as done; 8 are left in its order); no image left out"),
    (2, 3, 0.5, 1, "1 batches on each process (trainer.limit_train_batches ends its epochs at 2 "
                   "batches, 1 counted as done; 3 are left in its order)"),
    (4, 1, 6, 0, "the 8 of its 12 images trained before the stop count as 8 batches at this "
                 "layout, and trainer.limit_train_batches ends its epochs at 6, so it ends "
                 "here, without its validation"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stop_after", "new", "limit", "trained", "said"),
    _LIMITED,
    ids=["1-limit-7", "3-limit-half", "1-limit-6-reached"],
)
def test_a_resume_at_another_batch_size_and_limit_trains_and_says_the_batches_the_limit_lets_run(
    tmp_path, caplog, stop_after: int, new: int, limit: float, trained: int, said: str
) -> None:
    # 12 images at batch 2 under trainer.limit_train_batches=5 (10 images), saved after 4 or 8.
    # Resumed with another batch size and limit, the epoch's count is the new batch size's
    # equivalent of the images trained; the epoch goes on in its order until the count reaches
    # the new limit, as a run at that batch size and limit would end it. The log line counted
    # the batches planned (8, 3) where the limit lets 3 and 1 run, and said "no batch of it is
    # left" where 4 were, the limit already reached.
    first = _Steps(stop_after, str(tmp_path / "at.ckpt"))
    _fit_steps(tmp_path / "first", 2, first, limit_train_batches=5)
    done = 2 * stop_after
    assert [i for _, ids in first.steps for i in ids] == _order(0)[:10]
    resumed = _Steps()
    with caplog.at_level("INFO"):
        _fit_steps(tmp_path / "resumed", new, resumed, str(tmp_path / "at.ckpt"), epochs=2,
                   limit_train_batches=limit)  # fmt: skip
    assert [i for e, i in resumed.seen if e == 0] == _order(0)[done : done + trained * new]
    per_epoch = int(limit * 12 / new) if isinstance(limit, float) else limit  # new-size batches
    assert [i for e, i in resumed.seen if e == 1] == _order(1)[: per_epoch * new]
    assert said in caplog.text, caplog.text


def test_a_resume_at_the_same_batch_size_past_a_lowered_limit_ends_the_epoch(
    tmp_path, caplog
) -> None:
    # 12 images at batch 2 under trainer.limit_train_batches=5, saved after 4 batches (8 images),
    # resumed at batch 2 under limit 3: the epoch has had more than its 3 batches. Before, the
    # count of 4 past the limit made Lightning start the epoch again: its first 2 images twice.
    first = _Steps(4, str(tmp_path / "at.ckpt"))
    _fit_steps(tmp_path / "first", 2, first, limit_train_batches=5)
    resumed = _Steps()
    with caplog.at_level("INFO"):
        _fit_steps(tmp_path / "resumed", 2, resumed, str(tmp_path / "at.ckpt"), epochs=2,
                   limit_train_batches=3)  # fmt: skip
    assert [i for e, i in resumed.seen if e == 0] == []
    assert [i for e, i in resumed.seen if e == 1] == _order(1)[:6]
    assert (
        "after 4 batches, past the 3 that trainer.limit_train_batches gives it now" in caplog.text
    )
