"""EpochRandomSampler: the training order depends on the seed and the epoch only, so a resumed
run trains its next epoch on the order the uninterrupted run would have used."""

from __future__ import annotations

import lightning as L
import torch
from lit import fake_batch, quiet_trainer, tiny_lit
from torch.utils.data import DataLoader

from detr_lightning.data.epoch_sampler import EpochRandomSampler


def test_order_is_a_function_of_seed_and_epoch_and_leaves_the_global_rng_alone() -> None:
    data = list(range(50))
    a, b = EpochRandomSampler(data, seed=7), EpochRandomSampler(data, seed=7)
    state = torch.get_rng_state()
    orders = []
    for epoch in range(3):
        a.set_epoch(epoch)
        orders.append(list(a))
        assert sorted(orders[-1]) == data  # every index once
    assert torch.equal(torch.get_rng_state(), state)
    assert len({tuple(o) for o in orders}) == 3  # a new order every epoch
    b.set_epoch(2)
    assert list(b) == orders[2]  # a fresh sampler (a resumed process) at epoch 2
    assert list(EpochRandomSampler(data, seed=8)) != orders[0]


class _SeenIds(L.Callback):
    def __init__(self) -> None:
        self.ids: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.ids.setdefault(trainer.current_epoch, []).append(int(batch.targets[0]["image_id"]))


def _fit(tmp_path, epochs: int, ckpt_path=None) -> _SeenIds:
    seen = _SeenIds()
    data = [fake_batch(i, size=32) for i in range(6)]
    loader = DataLoader(data, batch_size=None, sampler=EpochRandomSampler(data, seed=3))
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, callbacks=[seen], limit_val_batches=0,
                            enable_checkpointing=True)  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=loader, ckpt_path=ckpt_path)
    return seen


def test_a_resumed_run_continues_the_uninterrupted_order(tmp_path) -> None:
    full = _fit(tmp_path / "full", 3).ids
    assert full[2] != full[0]
    _fit(tmp_path / "first", 2)
    ckpt = next((tmp_path / "first").rglob("*.ckpt"))
    resumed = _fit(tmp_path / "resumed", 3, ckpt_path=str(ckpt)).ids
    assert list(resumed) == [2] and resumed[2] == full[2]
