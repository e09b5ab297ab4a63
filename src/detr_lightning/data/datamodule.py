"""LightningDataModules for COCO-format data: detection (:class:`DetrDataModule`) and panoptic
segmentation (:class:`PanopticDataModule`); COCO, custom data, generated shapes."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from detr_lightning.data import eval_transform_record
from detr_lightning.data.categories import (
    check_same_names,
    is_thing_per_label,
    label_map_from_categories,
)
from detr_lightning.data.checkpoint_labels import adopt_labels, labels_state
from detr_lightning.data.coco import CocoDetectionDataset, Transform
from detr_lightning.data.coco_json import read_coco_json
from detr_lightning.data.coco_panoptic import CocoPanopticDataset
from detr_lightning.data.collate import make_collate_fn
from detr_lightning.data.errors import DatasetFormatError
from detr_lightning.data.loaders import evaluation_loader, training_loader
from detr_lightning.data.shapes import categories as shapes_categories
from detr_lightning.data.shapes import ensure_shapes_dataset
from detr_lightning.data.transforms import make_eval_transforms, make_train_transforms


class DetrDataModule(L.LightningDataModule):
    """Train/val/test COCO-format datasets, padded into :class:`~detr_lightning.data.collate.Batch`.

    The label mapping is fixed at construction from the training json's categories (rule in
    :mod:`detr_lightning.data.categories`) and used for every split; ``num_classes`` and
    ``label_to_category_id`` are available immediately, and travel in checkpoints through
    ``state_dict``. ``generate_shapes`` (kwargs of
    :func:`~detr_lightning.data.shapes.ensure_shapes_dataset`) makes ``prepare_data`` generate
    the shapes dataset when it is missing. ``batch_size`` is per device; Lightning adds the
    distributed sampler for training; under DDP the evaluation splits are dealt out in whole
    single-process batches (:mod:`detr_lightning.data.eval_sampler`: the same padding, so the
    same detections, as one process). ``group_by_aspect_ratio`` batches training images of the same
    orientation together (:mod:`detr_lightning.data.sampler`: less padding; DDP-safe).
    ``keep_empty=False`` drops training images without objects; the evaluation splits keep
    theirs, as COCO's AP counts the false positives on them. ``exif_transpose=False`` reads the
    stored pixels of images with an EXIF orientation (labels made by a tool that ignores EXIF),
    where the json's width/height cannot tell (a square image turned by 90 degrees).
    """

    panoptic = False  # the kind of annotation file train_ann etc. name
    dataset_class: Callable[..., Dataset] = CocoDetectionDataset  # built per split by _build

    def __init__(
        self,
        train_images: str | Path,
        train_ann: str | Path,
        val_images: str | Path | None = None,
        val_ann: str | Path | None = None,
        test_images: str | Path | None = None,
        test_ann: str | Path | None = None,
        batch_size: int = 2,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        train_transforms: Transform | None = None,
        val_transforms: Transform | None = None,
        pad_to_multiple: int | None = None,
        keep_empty: bool = True,
        coco_id_space: bool | None = None,
        generate_shapes: dict[str, Any] | None = None,
        group_by_aspect_ratio: bool = False,
        exif_transpose: bool = True,
    ) -> None:
        super().__init__()
        self.exif_transpose = exif_transpose
        self.group_by_aspect_ratio = group_by_aspect_ratio
        # The composed data.val_transforms config, recorded in checkpoints (eval_transform_record).
        self.val_transforms_record: dict[str, Any] | None = None
        self.paths = {
            "train": (train_images, train_ann),
            "val": (val_images, val_ann),
            "test": (test_images, test_ann),
        }
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        # pinning needs an accelerator; without one DataLoader would only warn
        self.num_workers = num_workers
        self.pin_memory = pin_memory and torch.accelerator.is_available()
        self.persistent_workers = persistent_workers and num_workers > 0
        self.train_transforms = (
            make_train_transforms() if train_transforms is None else train_transforms
        )
        self.val_transforms = make_eval_transforms() if val_transforms is None else val_transforms
        self.collate_fn = make_collate_fn(pad_to_multiple)
        self.keep_empty, self.coco_id_space = keep_empty, coco_id_space
        self.generate_shapes = dict(generate_shapes) if generate_shapes else None
        self.categories = self._read_categories(Path(train_ann))
        self._train_categories = list(self.categories)  # the other splits' names must match
        self.label_to_category_id = label_map_from_categories(self.categories, coco_id_space)
        self.datasets: dict[str, Dataset] = {}
        # The run's seed (seed_everything ran before this is built), kept for the training
        # order: under DDP each rank's own random streams start at setup (rng_states.py).
        self.seed = torch.initial_seed()

    def _read_categories(self, train_ann: Path) -> list[dict]:
        if not train_ann.is_file() and self.generate_shapes is not None:
            # the generator's own; prepare_data writes the files
            return shapes_categories(panoptic=self.panoptic)
        kind = "panoptic" if self.panoptic else "instances"
        return read_coco_json(train_ann, kind=kind)["categories"]

    @property
    def num_classes(self) -> int:
        """Classification slots, excluding DETR's "no object" class."""
        return len(self.label_to_category_id)

    @property
    def category_names(self) -> list[str]:
        """Name per label ("" for unused COCO slots)."""
        names = {int(c["id"]): str(c["name"]) for c in self.categories}
        return [names.get(c, "") for c in self.label_to_category_id]

    @property
    def is_thing(self) -> list[bool]:
        """Per label: a thing (True; every detection category) or stuff / an unused slot."""
        return is_thing_per_label(self.categories, self.label_to_category_id)

    def prepare_data(self) -> None:
        if self.generate_shapes is not None:
            ensure_shapes_dataset(**self.generate_shapes)

    def _build(self, split: str) -> Dataset | None:
        images, ann = self.paths[split]
        if images is None or ann is None:
            return None
        dataset = self.dataset_class(
            images,
            ann,
            transforms=self.train_transforms if split == "train" else self.val_transforms,
            label_to_category_id=self.label_to_category_id,
            keep_empty=self.keep_empty or split != "train",
            exif_transpose=self.exif_transpose,
            **self._split_kwargs(split),
        )
        check_same_names(dataset.categories, ann, self._train_categories, self.paths["train"][1])
        return dataset

    def _same_as_val(self, split: str) -> bool:
        """Whether ``split`` names the validation split's files (a common layout: the test
        split is the validation json again), so that the val dataset can serve it."""
        files = [[str(v) for v in (*self.paths[s], *self._split_kwargs(s).values())]
                 for s in (split, "val")]  # fmt: skip
        return files[0] == files[1]

    def _split_kwargs(self, split: str) -> dict[str, Any]:
        """The dataset class's own arguments for ``split``."""
        return {"train": split == "train"}

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", ("train", "val", "test")
        )
        self._setup_splits(wanted)

    def _setup_splits(self, splits: Sequence[str]) -> None:
        for split in splits:
            if split == "test" and "val" in self.datasets and self._same_as_val("test"):
                self.datasets["test"] = self.datasets["val"]  # read (and warned about) once
            if split not in self.datasets and (dataset := self._build(split)) is not None:
                dataset.require_objects(split)
                if split != "train":  # read after a training epoch: a bad file would cost it
                    dataset.check_headers()
                self.datasets[split] = dataset

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup(None)
        if split not in self.datasets:
            raise ValueError(
                f"No {split} dataset: set the data config's {split}_images and {split}_ann."
            )
        workers = {"num_workers": self.num_workers, "pin_memory": self.pin_memory,
                   "persistent_workers": self.persistent_workers,
                   "collate_fn": self.collate_fn}  # fmt: skip
        if train:
            return training_loader(self.datasets[split], self.batch_size,
                                   self.group_by_aspect_ratio, self.seed, **workers)  # fmt: skip
        return evaluation_loader(self.datasets[split], self.val_batch_size, **workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def state_dict(self) -> dict[str, Any]:
        state = labels_state(self.label_to_category_id, self.categories)
        if self.val_transforms_record is not None:  # set by utils.build.build_datamodule
            state[eval_transform_record.KEY] = self.val_transforms_record
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopt a checkpoint's mapping (:mod:`~detr_lightning.data.checkpoint_labels`); the
        datasets built so far are rebuilt with it at once, so that data whose annotations use
        category ids the mapping lacks is refused here, before anything runs, as a checkpoint
        error (inside ``fit`` it looked like a bad file found in training)."""
        mapping, self.categories = adopt_labels(
            state_dict, self.label_to_category_id, self.categories, str(self.paths["train"][1])
        )
        if mapping != self.label_to_category_id:
            self._rebuild_with(mapping)
        saved = state_dict.get(eval_transform_record.KEY)
        eval_transform_record.warn_if_different(saved, self.val_transforms_record, "the checkpoint")

    def _rebuild_with(self, mapping: list[int]) -> None:
        built, data_ids = list(self.datasets), list(self.label_to_category_id)
        self.datasets.clear()
        self.label_to_category_id = mapping
        try:
            self._setup_splits(built)
        except DatasetFormatError as err:
            from detr_lightning.checkpointing.read import CheckpointLoadError

            raise CheckpointLoadError(
                f"the checkpoint's class head was trained on category ids {mapping} (its label "
                f"mapping, which a resume or an evaluation keeps); the data here has {data_ids} "
                f"({self.paths['train'][1]}): {str(err).split(' Fix: ')[0]} Fix: use data with "
                "the checkpoint's category ids, or start a new run from its weights with "
                "model.init_detector=<the .ckpt> (its class head then starts fresh)."
            ) from None


class PanopticDataModule(DetrDataModule):
    """:class:`DetrDataModule` over COCO panoptic data (:class:`CocoPanopticDataset` per split).

    Same arguments, with ``*_ann`` naming panoptic jsons, plus ``train_png`` / ``val_png`` /
    ``test_png``: the segment-id PNG folders (None: the json's path without ``.json``).
    Targets carry ``masks`` (padded to the batch by the collate) and keep crowd segments in
    every split; ``is_thing`` tells things from stuff per label, and
    ``datasets[split].ground_truth(image_id)`` gives the evaluator an image's original-size id
    map and segments_info.
    """

    panoptic = True
    dataset_class = CocoPanopticDataset

    def __init__(
        self,
        *args: Any,
        train_png: str | Path | None = None,
        val_png: str | Path | None = None,
        test_png: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.png_folders = {"train": train_png, "val": val_png, "test": test_png}

    def _split_kwargs(self, split: str) -> dict[str, Any]:
        return {"png_folder": self.png_folders[split]}
