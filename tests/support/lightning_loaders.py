"""A DetrDataModule's training loader as Lightning requests it, and Lightning's rebuild of it for
one DDP rank: what the batch-sampler tests check under DDP."""

from __future__ import annotations

from pathlib import Path

from coco_files import write_coco
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from detr_lightning.data.datamodule import DetrDataModule
from detr_lightning.data.transforms import make_eval_transforms


def requested_training_loader(
    tmp_path: Path, sizes: list[tuple[int, int]], grouped: bool
) -> tuple[DetrDataModule, DataLoader]:
    """A COCO folder of one box per image of ``sizes`` ((w, h)); its datamodule (batches of 2)
    and the training loader made inside Lightning's argument capture."""
    from lightning.fabric.utilities.data import _replace_dunder_methods

    boxes = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 8, 8]}
             for i in range(1, len(sizes) + 1)]  # fmt: skip
    images, ann = write_coco(tmp_path, sizes, boxes)
    dm = DetrDataModule(images, ann, batch_size=2, num_workers=0, group_by_aspect_ratio=grouped,
                        train_transforms=make_eval_transforms(64))  # fmt: skip
    with _replace_dunder_methods(BatchSampler):  # what Lightning does around *_dataloader()
        return dm, dm.train_dataloader()


def rank_1_of_2(dm: DetrDataModule, loader: DataLoader) -> tuple[DataLoader, DistributedSampler]:
    """Lightning's rebuild of ``loader`` for rank 1 of 2, and the sampler it put in."""
    from lightning.pytorch.utilities.data import _update_dataloader

    dist = DistributedSampler(dm.datasets["train"], num_replicas=2, rank=1, shuffle=True)
    return _update_dataloader(loader, dist), dist
