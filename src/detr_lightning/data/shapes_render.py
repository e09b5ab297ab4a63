"""Render one image of the shapes dataset: textured "stuff" background, occluding shapes.

Everything is drawn from one ``numpy.random.Generator``, so an image is a pure function of its
seed. Thing colours are random (never tied to a category): the shape is what a model must learn.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from detr_lightning.data.shapes_background import STUFF_IDS, background, noise, noise_bank

THING_NAMES = ("ellipse", "rectangle", "triangle", "cross", "star")
THING_IDS = {name: i + 1 for i, name in enumerate(THING_NAMES)}
assert max(THING_IDS.values()) < min(STUFF_IDS.values())  # one id space for both
# Target visible areas (px) of COCO's small (< 32^2), medium and large (> 96^2) ranges.
AREA_RANGES = {"small": (100, 900), "medium": (1200, 8500), "large": (10000, 20000)}
AREA_PROBS = {"small": 0.4, "medium": 0.35, "large": 0.25}
FILL = {"ellipse": math.pi / 4, "rectangle": 1.0, "triangle": 0.47, "cross": 0.57, "star": 0.34}
MAX_OCCLUDED = 0.5  # a shape may lose at most this fraction of its pixels to later shapes


@dataclass
class Shape:
    category_id: int
    segment_id: int
    box: tuple[int, int, int, int]  # x, y, w, h: tight box of the full (unoccluded) shape
    mask: np.ndarray  # bool [h, w], the full shape inside ``box``
    visible: int = 0  # pixels not covered by later shapes

    @property
    def window(self) -> tuple[slice, slice]:
        x, y, w, h = self.box
        return slice(y, y + h), slice(x, x + w)


def _polygon(name: str, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Outline in the unit square [0, 1]^2, before stretching to the shape's box."""
    turn = rng.uniform(0, 2 * math.pi)
    if name == "triangle":
        angles = [turn + k * 2 * math.pi / 3 for k in range(3)]
        radii = [0.5] * 3
    elif name == "star":
        angles = [turn + k * math.pi / 5 for k in range(10)]
        radii = [0.5 if k % 2 == 0 else 0.2 for k in range(10)]
    else:
        raise ValueError(name)
    pts = np.array([[r * math.cos(a), r * math.sin(a)] for r, a in zip(radii, angles, strict=True)])
    pts -= pts.min(axis=0)
    return [tuple(p) for p in pts / pts.max(axis=0)]


def _draw_mask(name: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """bool [h, w] mask of the shape stretched over a w x h box."""
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    if name == "ellipse":
        draw.ellipse([0, 0, w - 1, h - 1], fill=1)
    elif name == "rectangle":
        draw.rectangle([0, 0, w - 1, h - 1], fill=1)
    elif name == "cross":
        t = rng.uniform(0.28, 0.4)
        bw, bh = max(2, round(w * t)), max(2, round(h * t))
        cx, cy = (w - bw) // 2, (h - bh) // 2
        draw.rectangle([cx, 0, cx + bw - 1, h - 1], fill=1)
        draw.rectangle([0, cy, w - 1, cy + bh - 1], fill=1)
    else:
        draw.polygon([(px * (w - 1), py * (h - 1)) for px, py in _polygon(name, rng)], fill=1)
    mask = np.asarray(img, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # tight: the box is exact


def _box_size(name: str, area: float, height: int, width: int, rng) -> tuple[int, int] | None:
    """Box (w, h) holding ``area`` visible pixels of ``name`` inside the image, or None."""
    box_area, max_w, max_h = area / FILL[name], width - 4, height - 4
    if name in ("star", "cross"):  # their aspect ratio stays 1
        lo = hi = 0.0
    else:  # log aspect w/h within +-0.5 and such that the box fits
        lo = max(-0.5, math.log(box_area / max_h**2))
        hi = min(0.5, math.log(max_w**2 / box_area))
    if lo > hi or (lo == hi == 0.0 and box_area > min(max_w, max_h) ** 2):
        return None
    aspect = math.exp(rng.uniform(lo, hi))
    w, h = math.sqrt(box_area * aspect), math.sqrt(box_area / aspect)
    return max(6, min(max_w, round(w))), max(6, min(max_h, round(h)))


def _sample_objects(n: int, height: int, width: int, rng) -> list[tuple[str, np.ndarray]]:
    """Draw n (category name, full mask) pairs; at most one large object per image."""
    objects, has_large = [], False
    for _ in range(n):
        cls = str(rng.choice(list(AREA_PROBS), p=list(AREA_PROBS.values())))
        cls = "medium" if cls == "large" and has_large else cls
        lo, hi = AREA_RANGES[cls]
        area = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        name = str(rng.choice(THING_NAMES))
        size = _box_size(name, area, height, width, rng)
        if size is None:  # too big for this image: the smallest area of the class, then
            size = _box_size(name, lo, height, width, rng)  # another shape (thin stars and
        if size is None:  # triangles reach the large range in big images only)
            fits = [m for m in THING_NAMES if _box_size(m, lo, height, width, rng) is not None]
            name = str(rng.choice(fits)) if fits else name
            size = _box_size(name, lo if fits else 0.3 * lo, height, width, rng)
        has_large = has_large or cls == "large"
        objects.append((name, _draw_mask(name, *size, rng)))
    return objects


def _min_visible(full: int) -> int:
    """Pixels a shape keeps: MAX_OCCLUDED may be hidden, but never so many that the shape
    falls into a smaller COCO size class (small < 32^2 <= medium <= 96^2 < large)."""
    floor = 96 * 96 + 1 if full > 96 * 96 else 32 * 32 if full >= 32 * 32 else 0
    return max(floor, math.ceil((1 - MAX_OCCLUDED) * full))


def _covered(new: Shape, seg: np.ndarray, shapes: list[Shape]) -> list[int] | None:
    """Pixels of each earlier shape ``new`` would cover, or None if one would lose too many."""
    nx, ny, nw, nh = new.box
    counts = []
    for s in shapes:
        x, y, w, h = s.box
        x0, y0, x1, y1 = max(x, nx), max(y, ny), min(x + w, nx + nw), min(y + h, ny + nh)
        if x0 >= x1 or y0 >= y1:
            counts.append(0)
            continue
        mine = seg[y0:y1, x0:x1] == s.segment_id
        lost = int((mine & new.mask[y0 - ny : y1 - ny, x0 - nx : x1 - nx]).sum())
        if s.visible - lost < _min_visible(int(s.mask.sum())):
            return None
        counts.append(lost)
    return counts


def render_image(
    height: int, width: int, num_objects: int, rng: np.random.Generator, noise_seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[Shape]]:
    """Return (uint8 [H, W, 3] image, int32 [H, W] segment ids, list[Shape] in drawing order).

    Segment ids: stuff ``category_id * 1000``; thing ``category_id * 1000 + k`` (k >= 1).
    A shape is placed only if no earlier shape loses more than MAX_OCCLUDED of its pixels.
    """
    bank = noise_bank(noise_seed)
    pixels, seg = background(height, width, rng, bank)
    shapes: list[Shape] = []
    objects = _sample_objects(num_objects, height, width, rng)
    # Painter's order, largest first: small shapes occlude big ones, as in real scenes.
    order = sorted(range(len(objects)), key=lambda i: -int(objects[i][1].sum()))
    for k in order:
        name, mask = objects[k]
        h, w = mask.shape
        for _ in range(15):
            x, y = int(rng.integers(1, width - w)), int(rng.integers(1, height - h))
            shape = Shape(THING_IDS[name], THING_IDS[name] * 1000 + k + 1, (x, y, w, h), mask)
            lost = _covered(shape, seg, shapes)
            if lost is not None:
                break
        else:
            continue
        for s, n in zip(shapes, lost, strict=True):
            s.visible -= n
        shape.visible = int(mask.sum())
        win = pixels[(slice(None), *shape.window)]
        bg = win[:, mask].mean(axis=1)
        color = rng.uniform(0, 255, 3).astype(np.float32)
        for _ in range(10):  # keep the shape visible against what it covers
            if np.abs(color - bg).sum() > 120:
                break
            color = rng.uniform(0, 255, 3).astype(np.float32)
        shade = 1 + rng.uniform(-0.3, 0.3) * (np.arange(w, dtype=np.float32) / w - 0.5)
        np.copyto(win, color[:, None, None] * shade[None, None, :], where=mask[None])
        seg[shape.window][mask] = shape.segment_id
        shapes.append(shape)
    pixels += 5 * noise(bank, height, width, rng)
    image = np.clip(pixels, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(image), seg, shapes
