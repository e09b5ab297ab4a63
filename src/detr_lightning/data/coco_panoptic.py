"""COCO-format panoptic dataset (COCO panoptic 2017, the shapes dataset's panoptic split).

Layout: an image folder, a panoptic json and a folder of segment-id PNGs (by default the json's
path without ``.json``, panopticapi's convention), e.g. ``train2017/`` +
``annotations/panoptic_train2017.json`` + ``annotations/panoptic_train2017/``. A PNG pixel's
segment id is ``R + 256 G + 256^2 B``; 0 is VOID (unlabeled, no target).

``CocoPanopticDataset(...)[i]`` returns ``(image, target)``: ``image`` a float ``[3, H, W]``
ImageNet-normalised tensor after the transforms, and ``target`` with one row per segment,
things and stuff alike (``is_thing`` tells them apart by label):

* ``masks`` bool [T, H, W] at the transformed image's size (moved by the same transforms v2
  pipeline as the image, as a ``tv_tensors.Mask``; returned as a plain tensor);
* ``boxes`` float32 [T, 4] normalised cxcywh, the tight box of each transformed mask
  (``masks_to_boxes``, pixel-edge convention: see :func:`~.transforms.mask_boxes`);
* ``labels`` int64 [T] (mapping rule of :mod:`detr_lightning.data.categories`, from the
  panoptic json's categories); ``iscrowd`` int64 [T]: crowd segments are KEPT, also in training
  (the LightningModule drops them before the loss unless ``model.train_on_crowd``, which
  head=panoptic sets: the official panoptic training keeps them as targets); ``area``
  float32 [T], the segment's pixel count in the original-size PNG (what COCO's json ``area``
  is);
* ``image_id`` int64 scalar; ``orig_size`` / ``size`` int64 [2] (h, w), original and transformed.

Segments whose mask is empty after the geometric transforms (cropped away, or erased by a
downscale) are dropped with all their fields (:class:`~.transforms.BoxesFromMasks`).

Ground truth for PQ stays out of the batches (full-size id maps would be shipped for every
image): :meth:`CocoPanopticDataset.ground_truth` returns one image's original-size id map and
segments_info, and ``ann_file`` / ``png_folder`` are what ``pq_compute`` takes.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors

from detr_lightning.data.categories import is_thing_per_label
from detr_lightning.data.coco_json import read_coco_json
from detr_lightning.data.coco_panoptic_json import build_panoptic_index
from detr_lightning.data.errors import DatasetFormatError, ImageLoadError
from detr_lightning.data.indexed_images import IndexedImageDataset, Transform, check_files_exist
from detr_lightning.data.panoptic_png import read_segment_ids
from detr_lightning.data.transforms import (
    make_base_transforms,
    mask_boxes,
)

log = logging.getLogger(__name__)


class CocoPanopticDataset(IndexedImageDataset):
    """Panoptic dataset over an image folder, a panoptic json and its PNG folder (module doc).

    Args:
        img_folder: directory the json's image ``file_name`` entries are relative to.
        ann_file: COCO panoptic json.
        png_folder: directory of the segment-id PNGs; default: ``ann_file`` without ``.json``.
        transforms: ``(image, target) -> (image, target)`` as built by
            :mod:`detr_lightning.data.transforms` (they handle ``masks``); default: tensor
            conversion + normalisation.
        label_to_category_id: explicit mapping (the training split's, or a checkpoint's);
            default: derived from this file's categories.
        coco_id_space: force (True) or forbid (False) COCO's id space; None = detect.
        keep_empty: keep images without segments (all VOID) as negatives.
        exif_transpose: apply the EXIF orientation tag when decoding images (never the PNGs).
    """

    def __init__(
        self,
        img_folder: str | Path,
        ann_file: str | Path,
        png_folder: str | Path | None = None,
        transforms: Transform | None = None,
        label_to_category_id: list[int] | None = None,
        coco_id_space: bool | None = None,
        keep_empty: bool = True,
        exif_transpose: bool = True,
    ) -> None:
        self.img_folder, self.ann_file = Path(img_folder), Path(ann_file)
        self.png_folder = Path(png_folder) if png_folder else self.ann_file.with_suffix("")
        data = read_coco_json(self.ann_file, kind="panoptic")
        for folder, what, keys in (
            (self.img_folder, "Image", "data.train_images / data.val_images"),
            (self.png_folder, "Panoptic PNG", "data.train_png / data.val_png (null: the json's "
             "path without .json)"),
        ):  # fmt: skip
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{what} folder not found: {folder} (of {self.ann_file}). Fix: give the "
                    f"folder in {keys}, or generate the shapes dataset with `make data`."
                )
        self._set_categories(data["categories"], label_to_category_id, coco_id_space)
        self.is_thing = is_thing_per_label(self.categories, self.label_to_category_id)
        self.exif_transpose = exif_transpose
        self.transforms = transforms if transforms is not None else make_base_transforms()
        self._index = build_panoptic_index(
            data, self.ann_file, self.label_to_category_id, keep_empty
        )
        self._position: dict[int, int] | None = None  # image_id -> index, built on first use
        if len(self._index.file_names) == 0:
            raise DatasetFormatError(
                f"{self.ann_file}: the dataset is empty ({len(data['images'])} image records, "
                f"keep_empty={keep_empty}). Fix: point the config at a non-empty split."
            )
        check_files_exist(self.img_folder, self._index.file_names, self.ann_file, "image files")
        check_files_exist(self.png_folder, self._index.png_names, self.ann_file, "panoptic PNGs")
        if self._index.stats["empty_dropped"]:
            log.info("%s: dropped %d images without segments (keep_empty=False).",
                     self.ann_file, self._index.stats["empty_dropped"])  # fmt: skip

    def header_files(self) -> list[tuple[Path, tuple[int, int], str]]:
        """The images and their segment-id PNGs (the same json width/height)."""
        ix = self._index
        pngs = [(self.png_folder / name, (int(w), int(h)), "panoptic PNGs")
                for name, (h, w) in zip(ix.png_names, ix.sizes, strict=True)]  # fmt: skip
        return super().header_files() + pngs

    def _rows(self, idx: int) -> slice:
        return slice(int(self._index.offsets[idx]), int(self._index.offsets[idx + 1]))

    def read_id_map(self, idx: int) -> Tensor:
        """Decode image ``idx``'s PNG: int64 [H, W] segment ids (0 = VOID), original size.

        Raises ImageLoadError when the PNG is missing or undecodable, DatasetFormatError when
        it is not RGB, its size is not the image's json width/height, or its ids and the json's
        segments_info differ (either way round)."""
        return self._read_id_map(idx)[0]

    def _read_id_map(self, idx: int) -> tuple[Tensor, Tensor]:
        """:meth:`read_id_map` and the pixel count of each json segment, int64 [T]."""
        ix = self._index
        height, width = (int(v) for v in ix.sizes[idx])
        path, image_id = self.png_folder / ix.png_names[idx], int(ix.image_ids[idx])
        where = f"{path} (image_id {image_id} of {self.ann_file})"
        if not path.is_file():
            raise ImageLoadError(
                f"Panoptic PNG not found: {where}. Fix: restore it, or point png_folder at the "
                f"folder that holds the PNGs (default: the json path without .json)."
            )
        decoded = read_segment_ids(path, where)
        if decoded.shape != (height, width):
            raise DatasetFormatError(
                f"{where} is {decoded.shape[1]}x{decoded.shape[0]} (width x height) but its image "
                f"{ix.file_names[idx]} is {width}x{height} (json width/height). Fix: use the PNG "
                f"made for that image."
            )
        ids = torch.from_numpy(decoded)
        values, counts = torch.unique(ids, return_counts=True)  # sorted
        found = values[values != 0].numpy()
        listed = ix.segment_ids[self._rows(idx)]
        for missing, holder, other in ((np.setdiff1d(found, listed), path, "segments_info"),
                                       (np.setdiff1d(listed, found), self.ann_file, "PNG")):  # fmt: skip
            if len(missing):
                raise DatasetFormatError(
                    f"{where}: segment id {int(missing[0])}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + f" is in {holder} but not in the {other} of that image. Fix: the PNG and "
                    f"segments_info must list the same segment ids (0 = VOID)."
                )
        areas = counts[np.searchsorted(values.numpy(), listed)]
        stated = ix.area[self._rows(idx)]  # the json's; PQ's union reads it, as panopticapi's
        wrong = np.flatnonzero(~np.isnan(stated) & (stated != areas.numpy()))
        if len(wrong):
            j = int(wrong[0])
            raise DatasetFormatError(
                f"{where}: segment id {int(listed[j])} has area {stated[j]:g} in the "
                f"segments_info of {self.ann_file}, but the PNG has {int(areas[j])} pixels of it"
                + (f" ({len(wrong) - 1} more segments differ)" if len(wrong) > 1 else "")
                + ". Fix: set area to the PNG's pixel count, or leave the field out."
            )
        return ids, areas

    def ground_truth(self, image_id: int) -> dict[str, Any]:
        """One image's ground truth for PQ, at its original size, in the layout of
        ``evaluation.panoptic_io.PanopticImage``: ``{"ids": int64 [H, W] (0 = VOID),
        "segments_info": [{"id", "category_id", "iscrowd", "isthing", "area" (when the json
        has it)}], "name": "<png> (image_id N)"}``. Decodes and validates the PNG."""
        if self._position is None:
            self._position = {int(i): k for k, i in enumerate(self._index.image_ids)}
        if int(image_id) not in self._position:
            raise KeyError(f"image_id {image_id} is not in {self.ann_file} (or was dropped)")
        idx, ix = self._position[int(image_id)], self._index
        things = {int(c["id"]): int(c["isthing"]) for c in self.categories}
        rows = self._rows(idx)
        segments = []
        for seg, cat, crowd, area in zip(ix.segment_ids[rows].tolist(),
                                         ix.category_ids[rows].tolist(), ix.iscrowd[rows].tolist(),
                                         ix.area[rows].tolist(), strict=True):  # fmt: skip
            info = {"id": seg, "category_id": cat, "iscrowd": crowd, "isthing": things[cat]}
            if not np.isnan(area):  # the json's value, int when it was one
                info["area"] = int(area) if area.is_integer() else area
            segments.append(info)
        name = f"{self.png_folder / ix.png_names[idx]} (image_id {int(image_id)})"
        return {"ids": self.read_id_map(idx), "segments_info": segments, "name": name}

    def raw_target(self, idx: int) -> dict[str, Tensor]:
        """Target before transforms: ``masks`` Mask uint8 0/1 [T, H, W] (uint8: cheaper to resize
        than bool; the transforms return bool) and ``boxes`` absolute XYXY at the
        original size, plus ``labels``, ``iscrowd``, ``area`` [T]."""
        ix, rows = self._index, self._rows(idx)
        ids, areas = self._read_id_map(idx)
        masks = ids.unsqueeze(0) == torch.from_numpy(ix.segment_ids[rows]).view(-1, 1, 1)
        return {
            "masks": tv_tensors.Mask(masks.to(torch.uint8)),
            "boxes": tv_tensors.BoundingBoxes(
                mask_boxes(masks), format="XYXY", canvas_size=tuple(ids.shape)
            ),
            "labels": torch.from_numpy(ix.labels[rows]),
            "iscrowd": torch.from_numpy(ix.iscrowd[rows]),
            "area": areas.to(torch.float32),
        }
