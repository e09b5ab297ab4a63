"""What the detection and panoptic datasets share: an image index read from a COCO json, and
the sample pipeline image -> transforms -> DETR target."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from detr_lightning.data.categories import label_map_from_categories
from detr_lightning.data.image_io import load_rgb_image
from detr_lightning.data.transforms import boxes_to_normalized_cxcywh

Transform = Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]


class IndexedImageDataset(Dataset):
    """Base of :class:`~detr_lightning.data.coco.CocoDetectionDataset` and
    :class:`~detr_lightning.data.coco_panoptic.CocoPanopticDataset`.

    Subclasses set ``img_folder``, ``ann_file``, ``exif_transpose``, ``transforms`` and
    ``_index`` (``file_names``, ``sizes`` [N, 2] height/width, ``image_ids``) and implement
    :meth:`raw_target`.
    """

    img_folder: Path
    ann_file: Path
    exif_transpose: bool
    transforms: Transform

    categories: list[dict]
    label_to_category_id: list[int]
    num_classes: int

    def _set_categories(
        self,
        categories: list[dict],
        label_to_category_id: list[int] | None,
        coco_id_space: bool | None,
    ) -> None:
        """The json's categories and the label -> category id map (given, e.g. the training
        split's or a checkpoint's; else derived from ``categories``)."""
        self.categories = categories
        if label_to_category_id is None:
            label_to_category_id = label_map_from_categories(categories, coco_id_space)
        self.label_to_category_id = [int(c) for c in label_to_category_id]
        self.num_classes = len(self.label_to_category_id)

    @property
    def image_ids(self) -> list[int]:
        return self._index.image_ids.tolist()

    def __len__(self) -> int:
        return len(self._index.file_names)

    def raw_target(self, idx: int) -> dict[str, Tensor]:
        """Target before transforms, at the original size (``boxes`` absolute XYXY)."""
        raise NotImplementedError

    def __getitem__(self, idx: int) -> tuple[Tensor, dict[str, Tensor]]:
        """-> (image [3, H, W] float after the transforms, target): ``boxes`` [T, 4] normalised
        cxcywh, ``labels`` [T], ``iscrowd`` [T], ``area`` [T], ``masks`` [T, H, W] bool (panoptic
        only), ``image_id``, ``orig_size`` (h, w before the transforms), ``size`` (h, w after)."""
        ix = self._index
        height, width = (int(v) for v in ix.sizes[idx])
        image = load_rgb_image(
            self.img_folder / ix.file_names[idx],
            self.ann_file,
            exif_transpose=self.exif_transpose,
            expected_size=(width, height),
        )
        image, target = self.transforms(image, self.raw_target(idx))
        if isinstance(target["boxes"], tv_tensors.BoundingBoxes):
            target["boxes"] = boxes_to_normalized_cxcywh(target["boxes"])
        if "masks" in target:
            target["masks"] = target["masks"].as_subclass(Tensor).to(torch.bool)
        target["image_id"] = torch.tensor(int(ix.image_ids[idx]), dtype=torch.int64)
        target["orig_size"] = torch.tensor([height, width], dtype=torch.int64)
        target["size"] = torch.tensor(tuple(image.shape[-2:]), dtype=torch.int64)
        return image, target
