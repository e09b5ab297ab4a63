"""BatchLossMean: the evaluation losses of one process, each batch once, weighted by images."""

import torch

from detr_lightning.evaluation.batch_losses import BatchLossMean


def test_image_weighted_mean_of_distinct_batches() -> None:
    mean = BatchLossMean()
    mean.update([0, 1], {"val/loss": torch.tensor(1.0), "val/loss_dn": torch.tensor(5.0)})
    mean.update([2], {"val/loss": torch.tensor(4.0)})
    mean.update([0, 1], {"val/loss": torch.tensor(1.0), "val/loss_dn": torch.tensor(5.0)})
    values = mean.compute()  # the repeat of [0 1] (a DDP rank's padding) counts once
    assert values["val/loss"].item() == (2 * 1.0 + 1 * 4.0) / 3
    assert values["val/loss_dn"].item() == 5.0  # only the batches that have it
    assert mean.compute() == {}  # compute resets
