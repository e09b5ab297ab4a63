"""Images to predict on: a COCO split's records (a folder's: image_search.py), decoding with
named errors, and padded batches that skip what cannot be read."""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor

from detr_lightning.data.collate import collate
from detr_lightning.data.errors import ImageLoadError
from detr_lightning.data.image_io import load_rgb_image
from detr_lightning.errors import UnreadableInputError
from detr_lightning.inference.image_search import IMAGE_EXTENSIONS, ImageRecord


def output_stems(file_names: Sequence[str]) -> list[str]:
    """Per input, the unique stem of the files written for it (``drawn/<stem>.png``,
    ``<stem>_decoder.png``): its relative path without the suffix (``a/x.jpg`` -> ``a/x``), or
    with it when another input has the same stem (``x.jpg`` and ``x.png`` -> ``x.jpg`` and
    ``x.png``), so that no output overwrites another. Compared case-insensitively (macOS and
    Windows file systems); a name still taken after that gets ``~2``, ``~3``, ..."""
    plain = [os.path.splitext(n)[0] for n in file_names]
    count = Counter(s.casefold() for s in plain)
    stems = [n if count[s.casefold()] > 1 else s for n, s in zip(file_names, plain, strict=True)]
    reserved = {s.casefold() for s in stems}
    taken: set[str] = set()
    unique = []
    for stem in stems:
        name, k = stem, 1
        while name.casefold() in taken or (name != stem and name.casefold() in reserved):
            k += 1
            name = f"{stem}~{k}"
        taken.add(name.casefold())
        unique.append(name)
    return unique


def unreadable_error(
    skipped: Sequence[tuple[ImageRecord, str]], source: str
) -> UnreadableInputError:
    """The error when no image of ``source`` could be read: every file and why, and the fix
    (an ExplainedError: the entry points print it alone, without a traceback)."""
    listing = "\n  ".join(message.removesuffix("; skipped") for _, message in skipped)
    return UnreadableInputError(
        f"{source}: none of the {len(skipped)} image file(s) could be read, nothing was "
        f"predicted:\n  {listing}\nFix: give input= an image file or a folder of images "
        f"({', '.join(IMAGE_EXTENSIONS)}) that PIL can decode."
    )


def coco_split_images(images_dir: str | Path, ann_file: str | Path) -> list[ImageRecord]:
    """Every image record of a COCO json (its ids, file names and sizes), in the json's order;
    a record with a missing or mistyped field, or a repeated id, is a DatasetFormatError."""
    from detr_lightning.data.coco_json import read_coco_json
    from detr_lightning.data.coco_records import check_records, check_unique_ids

    data = read_coco_json(ann_file, kind="any")  # instances or panoptic: only images are read
    check_records(data["images"], "images", Path(ann_file))
    check_unique_ids((im["id"] for im in data["images"]), "images", Path(ann_file))
    return [
        ImageRecord(
            Path(images_dir) / im["file_name"],
            int(im["id"]),
            str(im["file_name"]),
            (int(im["width"]), int(im["height"])),
        )  # fmt: skip
        for im in data["images"]
    ]


@dataclass
class Sample:
    """A decoded image: ``pixels`` [3, h, w] float (transformed), ``original`` [3, H, W] uint8
    (None unless kept for drawing); ``error`` names the file when it could not be read."""

    record: ImageRecord
    pixels: Tensor | None = None
    original: Tensor | None = None
    orig_size: tuple[int, int] | None = None  # (H, W) of the decoded file
    error: str | None = None


class ImageListDataset(Dataset):
    """Decodes and transforms :class:`ImageRecord` s; a file that cannot be read becomes a
    :class:`Sample` with ``error`` set (workers cannot log to the main process reliably, and one
    bad file must not end a run over a folder).

    Args:
        records: the images.
        transform: the evaluation transform (``(image, target) -> (image, target)``,
            :func:`~detr_lightning.data.transforms.make_eval_transforms`).
        keep_original: also return the decoded uint8 image (for drawing).
        exif_transpose: apply the EXIF orientation tag (``data.exif_transpose``); False reads
            every image as stored, as the data module does.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable,
        keep_original: bool = True,
        exif_transpose: bool = True,
    ) -> None:
        self.records, self.transform, self.keep_original = list(records), transform, keep_original
        self.exif_transpose = exif_transpose

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Sample:
        rec = self.records[idx]
        try:
            image = load_rgb_image(rec.path, rec.path.parent, self.exif_transpose,
                                   expected_size=rec.expected_size)  # fmt: skip
        except ImageLoadError as err:
            cause = err.__cause__
            # A decompression bomb's own message carries the deliberate fix: keep it whole.
            bomb = isinstance(cause, Image.DecompressionBombError)
            reason = f"{type(cause).__name__}: {cause}" if cause and not bomb else str(err)
            return Sample(rec, error=f"cannot read image {rec.path} ({reason}); skipped")
        width, height = image.size
        # The eval transforms expect a detection target; an empty box list keeps them generic.
        empty = tv_tensors.BoundingBoxes(
            torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)
        )
        pixels, _ = self.transform(image, {"boxes": empty})
        original = pil_to_tensor(image) if self.keep_original else None
        return Sample(rec, pixels.as_subclass(Tensor), original, (height, width))


@dataclass
class ImageBatch:
    """Readable images padded together (``pixel_values`` [B, 3, H, W], ``pixel_mask`` [B, H, W]
    bool True = real, ``orig_sizes`` [B, 2] (h, w) of the files) and the unreadable ones."""

    samples: list[Sample]
    pixel_values: Tensor | None = None
    pixel_mask: Tensor | None = None
    orig_sizes: Tensor | None = None
    failed: list[Sample] = field(default_factory=list)


def collate_images(samples: Sequence[Sample], pad_to_multiple: int | None = None) -> ImageBatch:
    """Pad the readable samples (:func:`~detr_lightning.data.collate.collate`); keep the rest
    in ``failed``."""
    good = [s for s in samples if s.error is None]
    failed = [s for s in samples if s.error is not None]
    if not good:
        return ImageBatch([], failed=failed)
    batch = collate([(s.pixels, {}) for s in good], pad_to_multiple)
    sizes = torch.tensor([s.orig_size for s in good], dtype=torch.int64)
    return ImageBatch(good, batch.pixel_values, batch.pixel_mask, sizes, failed)


def image_loader(
    dataset: ImageListDataset,
    batch_size: int,
    num_workers: int = 0,
    pad_to_multiple: int | None = None,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """In-order batches of :class:`ImageBatch` (predictions keep the input's order), padded as
    the data module pads evaluation batches (``pad_to_multiple``: ``data.pad_to_multiple``).

    At most one worker per batch after the first (a worker helps by decoding the next batch while
    the model runs on this one): one image is read in the main process, not by 8 new processes
    each importing torch."""
    batches = -(-len(dataset) // batch_size)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False,
        collate_fn=functools.partial(collate_images, pad_to_multiple=pad_to_multiple),
        num_workers=max(0, min(num_workers, batches - 1)), **kwargs,
    )  # fmt: skip
