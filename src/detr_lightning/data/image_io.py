"""Image decoding: any PIL mode to RGB, EXIF orientation applied, errors that name the file."""

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detr_lightning.data.errors import ImageLoadError

log = logging.getLogger(__name__)
# Modes holding more than 8 bits per sample; PIL's convert("RGB") would saturate them.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_EXIF_ORIENTATION = 0x0112
# A wide image whose maximum is below 2**12 holds at most 12 bits of data: warned once.
_NARROW_PEAK = 4096
_warned: set[str] = set()  # what _warn_once has warned about in this process
# PIL refuses images over 2 x Image.MAX_IMAGE_PIXELS (89.5 M by default) as possible decompression
# bombs. A run on genuinely huge images raises the limit deliberately with this variable (read
# once here; DataLoader workers inherit it): a pixel count, or "none" to disable the check.
PIXEL_LIMIT_ENV = "DETR_MAX_IMAGE_PIXELS"
if os.environ.get(PIXEL_LIMIT_ENV):
    _value = os.environ[PIXEL_LIMIT_ENV].strip().lower()
    Image.MAX_IMAGE_PIXELS = None if _value == "none" else int(float(_value))


def decompression_bomb_message(path: Path, ann_file: str | Path, err: Exception) -> str:
    """The DecompressionBombError text with the file, its pixel count and the deliberate fix.
    ``ann_file``: the json that lists the image, or the folder it was found in (predict)."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = int(found.group(1)) if found else None
    count = f"{pixels:,} pixels" if pixels is not None else "too many pixels"
    listed = str(ann_file).endswith(".json")
    where = f"listed in {ann_file}" if listed else f"in {ann_file}"
    otherwise = (f"remove the image and its annotations from {ann_file}" if listed
                 else "remove it from the input")  # fmt: skip
    return (
        f"Image {path} ({where}) has {count}, over PIL's decompression-bomb limit "
        f"(2 x Image.MAX_IMAGE_PIXELS = {2 * (Image.MAX_IMAGE_PIXELS or 0):,}); PIL refuses to "
        f"decode it ({err}). Fix: if the image is genuine, downscale it, or raise the limit "
        f"deliberately: {PIXEL_LIMIT_ENV}={pixels or '<pixels>'} in the environment (or "
        f"PIL.Image.MAX_IMAGE_PIXELS = {pixels or '<pixels>'} before the run); otherwise "
        f"{otherwise}."
    )


def _to_rgb(img: Image.Image, path: Path | None = None) -> Image.Image:
    """``img`` as RGB. Wide (16-bit, 32-bit int, float) grayscale always maps the 16-bit range
    to 8 bits, ``value >> 8`` (0..65535 -> 0..255; values outside it clipped first): one rule
    for every image, so that brightness means the same in each (a rule that looked at each
    image's brightest pixel scaled one image and not the next). Data of 12 bits or fewer
    stored in 16 (an image whose maximum is below 4096) comes out nearly black under that
    rule: warned once per process, naming the file, so that it can be converted to 8 bits
    beforehand at its own range (12-bit: ``value >> 4``)."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_MODES:
        # Clipped in the image's own dtype (uint16, int32 or float32 hold 0..65535 exactly).
        arr = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
        if arr.size and int(arr.max()) < _NARROW_PEAK:
            _warn_narrow(path, int(arr.max()))
        img = Image.fromarray((arr >> 8).astype(np.uint8), mode="L")
    elif img.mode == "P" and "transparency" in img.info:
        # Going through RGBA avoids PIL's warning about palette transparency; alpha is dropped.
        img = img.convert("RGBA")
    return img.convert("RGB")


def _warn_once(key: str, message: str, *args: object) -> None:
    """A per-image condition warned about once per process (each DataLoader worker is one)."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _warn_narrow(path: Path | None, peak: int) -> None:
    _warn_once(
        "narrow",
        "Image %s is 16-bit with a brightest value of %d, below %d: 12-bit (or narrower) data "
        "stored in 16 bits. Wide images map 0..65535 to 0..255 (value >> 8), so this one, and "
        "any like it (named only once), trains nearly black. Fix: convert such images to 8 bits "
        "at their own range before training (12-bit: value >> 4; e.g. with numpy and PIL: "
        "Image.fromarray((np.asarray(img) >> 4).astype(np.uint8)).save(...)).",
        path, peak, _NARROW_PEAK,
    )  # fmt: skip


def _keeps_size(orientation: int | None, size: tuple[int, int]) -> bool:
    """Whether EXIF ``orientation`` leaves an image of ``size`` (width, height) as wide and as
    high as stored: mirrored or turned by 180 degrees (2, 3, 4), or a square turned by 90
    (5..8). The json's width/height then cannot tell stored from upright pixels."""
    return orientation in (2, 3, 4) or (orientation in (5, 6, 7, 8) and size[0] == size[1])


def _orient(img: Image.Image, expected_size: tuple[int, int] | None, path: Path) -> Image.Image:
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation in (None, 1):
        return img
    upright = ImageOps.exif_transpose(img)
    # Annotation tools that ignore EXIF label the stored pixels; the json's width/height tell
    # which of the two the boxes refer to.
    if expected_size is not None and upright.size != expected_size and img.size == expected_size:
        return img
    if _keeps_size(orientation, img.size):
        _warn_once("same_size_turn", "Image %s has an EXIF orientation that keeps its size: its "
                   "width/height cannot tell whether the labels were made on the stored or the "
                   "upright pixels; it is read upright (data.exif_transpose=true; images like it "
                   "are not named again). If the labels were made on the stored pixels, set "
                   "data.exif_transpose=false.", path)  # fmt: skip
    return upright


def load_rgb_image(
    path: str | Path,
    ann_file: str | Path,
    exif_transpose: bool = True,
    expected_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode ``path`` fully into an RGB PIL image (H x W x 3, uint8).

    Grayscale, 16-bit, RGBA, LA, CMYK and palette images are converted to RGB (alpha dropped;
    16-bit: ``value >> 8`` for every image, see :func:`_to_rgb`).
    With ``exif_transpose`` the EXIF orientation tag is applied, so the pixels are the upright
    image; if only the stored (un-rotated) pixels match ``expected_size`` = (width, height) from
    the annotation file, those are returned instead, as the annotations were made on them.
    Raises ImageLoadError naming the image and ``ann_file`` when the file is missing, cannot be
    decoded, or its size matches neither orientation of ``expected_size``.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(
            f"Image file not found: {path} (listed in {ann_file}). Fix: restore the file, point "
            f"the dataset's image folder at the directory that holds it, or remove the image and "
            f"its annotations from {ann_file}."
        )
    try:
        img = Image.open(path)
        img.load()  # force a full decode here so truncation surfaces with the file's name
        oriented = _orient(img, expected_size, path) if exif_transpose else img
        out = _to_rgb(oriented, path)
    except Image.DecompressionBombError as err:  # not an OSError: caught on its own
        raise ImageLoadError(decompression_bomb_message(path, ann_file, err)) from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ImageLoadError(
            f"Cannot decode image {path} (listed in {ann_file}): {type(err).__name__}: {err}. "
            f"The file is corrupt, truncated or not an image. Fix: re-download or re-export it, or "
            f"remove the image and its annotations from {ann_file}."
        ) from err
    if out is not img:
        img.close()
    if expected_size is not None and out.size != expected_size:
        raise ImageLoadError(
            f"Image {path} is {out.size[0]}x{out.size[1]} (width x height) but {ann_file} says "
            f"{expected_size[0]}x{expected_size[1]}. Fix: correct that image's 'width'/'height' "
            f"in {ann_file} (boxes are clipped to them), or replace the image with the one the "
            f"annotations were made on."
        )
    return out


def check_image_headers(
    files: Sequence[tuple[Path, tuple[int, int]]], ann_file: str | Path, what: str = "images"
) -> int:
    """Open every file's header (not its pixels) and raise ImageLoadError listing those that
    are not images or whose size is not the json's (width, height) in either EXIF orientation.

    For evaluation splits, before training: read only when validation first reaches it, such a
    file would stop the run after a training epoch, before that epoch's checkpoint. A header
    costs well under a millisecond (COCO's 5,000 validation images: a second or two); a file
    truncated after its header still fails when it is decoded, with its name.

    Returns how many files have an EXIF orientation that keeps their size (a square image
    turned by 90 degrees, any image turned by 180 or mirrored): for those the json's
    width/height cannot tell whether the labels were made on the stored or the upright pixels."""
    bad, same_size_turns = [], 0
    for path, expected in files:
        try:
            with Image.open(path) as img:
                orientation = img.getexif().get(_EXIF_ORIENTATION)
                size, turned = img.size, orientation in (5, 6, 7, 8)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            bad.append(f"{path} ({type(err).__name__}: {err})")
            continue
        except Image.DecompressionBombError:
            continue  # allowed or not, decoding it says so with the fix (load_rgb_image)
        if size != tuple(expected) and not (turned and size[::-1] == tuple(expected)):
            bad.append(f"{path} is {size[0]}x{size[1]}, the json says {expected[0]}x{expected[1]}")
        elif _keeps_size(orientation, size):
            same_size_turns += 1
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        # A PNG is checked against the json's size only after its image agreed with it (the
        # images come first): the PNG, not the json, is then what to correct.
        sizes = ("re-export each at its image's size (the json's width/height match the image;"
                 " a PNG of another size was resized or belongs to another image)"
                 if "PNG" in what else f"correct their width/height in {ann_file}")  # fmt: skip
        raise ImageLoadError(
            f"{len(bad)} {what} listed in {ann_file} cannot be used: {shown}. Fix: re-download "
            f"or re-export them, {sizes}, or remove them and their annotations from it."
        )
    return same_size_turns
