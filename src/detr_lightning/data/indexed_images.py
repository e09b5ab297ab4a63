"""What the detection and panoptic datasets share: an image index read from a COCO json, and
the sample pipeline image -> transforms -> DETR target."""

from __future__ import annotations

import logging
import os
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from detr_lightning.data.categories import label_map_from_categories
from detr_lightning.data.errors import DatasetFormatError, ImageLoadError
from detr_lightning.data.image_io import check_image_headers, load_rgb_image
from detr_lightning.data.transforms import boxes_to_normalized_cxcywh

log = logging.getLogger(__name__)
Transform = Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]


def check_files_exist(folder: Path, names: Sequence[str], ann_file: Path, what: str) -> None:
    """Raise ImageLoadError listing the ``names`` (relative to ``folder``) that do not exist.

    Run when a dataset is built, so that an interrupted download fails at start-up rather than
    when a DataLoader first reaches the file (for a validation image: after a training epoch,
    before its checkpoint). One directory listing per folder instead of a stat per file (COCO's
    118k names: well under a second); names a listing lacks are stat'ed, for case-insensitive
    file systems."""
    by_dir: dict[Path, list[str]] = defaultdict(list)
    for name in names:
        path = folder / name
        by_dir[path.parent].append(path.name)
    missing = []
    listed: dict[Path, set[str]] = {}
    for directory, files in by_dir.items():
        try:
            listed[directory] = set(os.listdir(directory))
        except OSError:
            listed[directory] = set()
        missing += [directory / f for f in files if f not in listed[directory]]
    missing = [path for path in missing if not path.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ImageLoadError(
            f"{len(missing)} {what} listed in {ann_file} not found: {shown}{more}. Fix: "
            + _backslash_hint(names, set(missing), folder)
            + _normalization_hint(missing, listed)
            + f"restore them (an interrupted download or unzip is the usual cause), point the "
            f"data config at the folder that holds them, or remove those images and their "
            f"annotations from {ann_file}."
        )


def _backslash_hint(names: Sequence[str], missing: set[Path], folder: Path) -> str:
    """A Windows-made json's ``sub\\img.jpg`` is one odd file name on POSIX, not a folder and a
    file: say so first, as no restore would help."""
    slashed = [name for name in names if "\\" in name and folder / name in missing]
    if not slashed:
        return ""
    return (
        f"{len(slashed)} of these file_names contain a backslash (e.g. {slashed[0]}), the Windows "
        f"path separator, which is a plain character of the file name here: write them with "
        f"forward slashes in the json (e.g. {slashed[0].replace(chr(92), '/')}); otherwise "
    )


def _normalization_hint(missing: Sequence[Path], listed: Mapping[Path, set[str]]) -> str:
    """An accented name can be spelled in two Unicode forms (NFC: one code point per letter;
    NFD: letter plus combining accent, what macOS writes); POSIX compares bytes, so a json in
    one form misses files named in the other. Name the file on disk that only differs so."""
    on_disk = {}
    for path in missing:
        by_nfc = {unicodedata.normalize("NFC", f): f for f in listed.get(path.parent, ())}
        twin = by_nfc.get(unicodedata.normalize("NFC", path.name))
        if twin is not None:
            on_disk[path] = twin
    if not on_disk:
        return ""
    path, twin = next(iter(on_disk.items()))
    json_form = "NFC" if unicodedata.is_normalized("NFC", path.name) else "NFD"
    return (
        f"{len(on_disk)} of these exist under the same name in the other Unicode form (e.g. "
        f"{path.name!a} in the json is {json_form}, {twin!a} on disk is not): rename the files "
        f"to the json's form (`convmv -f utf8 -t utf8 --{json_form.lower()} -r --notest "
        f"{path.parent}`) or write the json's file_names in the files' form; otherwise "
    )


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

    def object_counts(self, crowd: bool = False) -> np.ndarray:
        """int64 [N]: each image's non-crowd objects, the targets the matcher sees (crowd
        objects never reach it), or with ``crowd`` every object (a model that trains on crowd
        objects too: ``model.train_on_crowd``)."""
        ix = self._index
        counted = np.concatenate([[0], np.cumsum((ix.iscrowd == 0) | crowd)])
        return counted[ix.offsets[1:]] - counted[ix.offsets[:-1]]

    def header_files(self) -> list[tuple[Path, tuple[int, int], str]]:
        """(file, json (width, height), what) of every file a sample reads: the images here."""
        ix = self._index
        return [(self.img_folder / name, (int(w), int(h)), "images")
                for name, (h, w) in zip(ix.file_names, ix.sizes, strict=True)]  # fmt: skip

    def check_headers(self) -> None:
        """:func:`~detr_lightning.data.image_io.check_image_headers` over :meth:`header_files`."""
        files = self.header_files()
        for what in dict.fromkeys(w for _, _, w in files):
            chosen = [(path, size) for path, size, w in files if w == what]
            turns = check_image_headers(chosen, self.ann_file, what)
            if turns and what == "images" and self.exif_transpose:
                log.warning(
                    "%s: %d images have an EXIF orientation that keeps their size (square "
                    "images turned by 90 degrees, or images turned by 180 degrees or mirrored): "
                    "their width/height cannot tell whether the labels were made on the stored "
                    "or on the upright pixels. They are read upright (data.exif_transpose=true); "
                    "if your annotation tool labelled the stored pixels, set "
                    "data.exif_transpose=false.", self.ann_file, turns,
                )  # fmt: skip

    def require_objects(self, split: str) -> None:
        """Raise when no image has an object: training would learn "no object" only, and
        every AP of an evaluation split would be -1 (a best checkpoint chosen on nothing)."""
        if not self.object_counts().any():
            raise DatasetFormatError(
                f"{self.ann_file}: the {split} split has no object to "
                f"{'train on' if split == 'train' else 'score against'} ({len(self)} images, none "
                f"with a non-crowd annotation inside its image). Fix: point data.{split}_ann at "
                f"an annotated split, or correct the annotations that were dropped (see the "
                f"warnings above)."
            )

    def check_query_capacity(self, num_queries: int, crowd: bool = False) -> None:
        """Raise when an image has more (non-crowd; with ``crowd`` any) objects than the model
        has queries: DETR predicts at most one object per query, and the matcher would stop
        mid-epoch."""
        counts = self.object_counts(crowd)
        over = np.flatnonzero(counts > num_queries)
        if len(over):
            i = int(over[counts[over].argmax()])
            which = (
                "crowd ones counted: model.train_on_crowd" if crowd else "crowd ones not counted"
            )
            raise DatasetFormatError(
                f"{self.ann_file}: image id {int(self._index.image_ids[i])} "
                f"({self._index.file_names[i]}) has {int(counts[i])} objects ({which}), more "
                f"than the model's {num_queries} queries ({len(over)} images exceed it); DETR "
                f"predicts at most one object per query. Fix: "
                f"model.net.num_queries={int(counts.max())} or more."
            )

    def raw_target(self, idx: int) -> dict[str, Tensor]:
        """Target before transforms, at the original size (``boxes`` absolute XYXY)."""
        raise NotImplementedError

    def evaluation_ground_truth(self, idx: int) -> dict[str, Tensor]:
        """``gt_*`` entries added to the target after the transforms: the ground truth the box
        metric scores against when it is not the model's target (none here)."""
        return {}

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
        target.update(self.evaluation_ground_truth(idx))
        return image, target
