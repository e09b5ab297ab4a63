"""The paper's augmentation with torchvision.transforms.v2 (tv_tensors do the box arithmetic).

A pipeline takes ``(image, target)`` where ``image`` is a PIL image or ``tv_tensors.Image`` and
``target["boxes"]`` is a ``tv_tensors.BoundingBoxes`` (absolute XYXY) with the per-box fields
``labels``, ``iscrowd``, ``area`` ([T] tensors), and returns the image as a float ``[3, H, W]``
ImageNet-normalised tensor with boxes still absolute XYXY on the new canvas, clamped to it. The
dataset then turns boxes into normalised cxcywh with :func:`boxes_to_normalized_cxcywh`.

Training (DETR section 4): horizontal flip (p 0.5), then either a resize of the shorter side to
one of ``scales`` (longer side <= ``max_size``), or a resize to one of ``crop_resize_scales``, a
random crop of ``crop_size`` px per side, and the same random resize. Boxes cut by the crop are
clamped; boxes left without area are removed with their labels, crowd flags and areas
(:class:`DropEmptyBoxes`; boxes a resize made thinner than a pixel stay, as in the official
code). Evaluation: shorter side ``size``, longer <= ``max_size``; no box is removed.

Segmentation targets (panoptic) add ``target["masks"]``, a ``tv_tensors.Mask`` [T, H, W] on the
image's canvas, uint8 0/1 or bool (uint8 is cheaper: torchvision resizes bool masks through
float32). Every step moves it with the image (flip, nearest-neighbour resize, crop;
NormalizeImage leaves it alone), and the pipeline returns it as bool. Before the clamp, :class:`BoxesFromMasks` drops the objects
whose mask became empty (cropped away, or too thin to survive a downscale) and replaces every box
with its mask's tight box, so a kept object always has a non-empty mask and a box of at least
1 x 1 px. Without ``masks`` it does nothing, so detection is unchanged.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_convert, masks_to_boxes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.tv_tensors import TVTensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_SCALES = tuple(range(480, 801, 32))  # 480, 512, ..., 800
PAPER_MAX_SIZE = 1333
PAPER_CROP_RESIZE_SCALES = (400, 500, 600)
PAPER_CROP_SIZE = (384, 600)
PER_BOX_KEYS = ("labels", "iscrowd", "area")


def keep_objects(target: dict[str, Any], keep: Tensor) -> dict[str, Any]:
    """``target`` with the objects where ``keep`` (bool [T]) is True, in every per-object entry
    (``boxes``, ``masks`` and :data:`PER_BOX_KEYS`; tv_tensors stay tv_tensors). ``target`` itself
    when every object is kept: indexing would copy every mask."""
    if keep.all():
        return target
    out = dict(target)
    for key in ("boxes", "masks", *PER_BOX_KEYS):
        if key in target:
            value = target[key]
            kept = value[keep]
            out[key] = tv_tensors.wrap(kept, like=value) if isinstance(value, TVTensor) else kept
    return out


class DropEmptyBoxes(v2.Transform):
    """Remove the boxes left without area (width or height <= 0 after the clamp: cropped away)
    with their per-box fields (``masks`` and :data:`PER_BOX_KEYS`), the official DETR crop rule.
    A box that a resize made thinner than a pixel stays a target, as it does there.
    torchvision's SanitizeBoundingBoxes cannot do this: its smallest ``min_size`` is 1 px."""

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        image, target = sample
        xyxy = F.convert_bounding_box_format(target["boxes"], new_format="XYXY").as_subclass(Tensor)
        return image, keep_objects(target, (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]))


class RandomSizeCrop(v2.Transform):
    """Crop a random window whose width and height are each uniform in
    ``[min_size, min(max_size, image side)]`` (the lower bound shrinks to the side when the image
    is smaller), at a uniformly random position."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(
                f"RandomSizeCrop needs 0 < min_size <= max_size, got {min_size, max_size}"
            )
        self.min_size, self.max_size = int(min_size), int(max_size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)

        def pick(lo: int, hi: int) -> int:
            return int(torch.randint(lo, hi + 1, ()))

        crop_w = pick(min(self.min_size, width), min(self.max_size, width))
        crop_h = pick(min(self.min_size, height), min(self.max_size, height))
        return dict(top=pick(0, height - crop_h), left=pick(0, width - crop_w),
                    height=crop_h, width=crop_w)  # fmt: skip

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def mask_boxes(masks: Tensor) -> Tensor:
    """Bool [T, H, W] masks -> float32 [T, 4] absolute xyxy boxes in pixel-edge coordinates.

    ``masks_to_boxes`` returns the last covered pixel's index as x2/y2; +1 makes x2/y2 the edge
    after it (COCO's ``x + w``), so a one-pixel-wide segment has width 1, not 0, and is not taken
    for a degenerate box. An empty mask gives [0, 0, 1, 1]; callers drop those first.
    """
    edge = torch.tensor([0.0, 0.0, 1.0, 1.0], device=masks.device)
    return masks_to_boxes(masks) + edge


class BoxesFromMasks(v2.Transform):
    """When the target holds ``masks`` (``tv_tensors.Mask`` [T, H, W], bool or uint8 0/1, returned
    as bool): drop the objects
    whose mask is empty, from every per-object entry (``masks``, ``boxes`` and
    :data:`PER_BOX_KEYS`), and set ``boxes`` to the masks' tight XYXY boxes (:func:`mask_boxes`).
    A transformed box can be looser than the object (a crop of a concave segment keeps the whole
    window); the mask is the ground truth. Without ``masks`` the sample passes unchanged."""

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        image, target = sample
        if "masks" not in target:
            return sample
        masks = target["masks"]
        if not isinstance(masks, tv_tensors.Mask):
            # a plain tensor is left untouched by flip/resize/crop and would silently misalign
            raise TypeError(
                f'target["masks"] must be a tv_tensors.Mask, got {type(masks).__name__}; wrap it '
                f"with tv_tensors.Mask(masks) before the transforms."
            )
        keep = masks.flatten(1).any(1).to(torch.bool)  # any() of uint8 is uint8
        out = dict(keep_objects(target, keep))
        out["masks"] = tv_tensors.wrap(out["masks"].to(torch.bool), like=masks)
        out["boxes"] = tv_tensors.BoundingBoxes(
            mask_boxes(out["masks"]), format="XYXY", canvas_size=tuple(masks.shape[-2:])
        )
        return image, out


def _ints(values: int | Sequence[int]) -> list[int]:
    return [int(values)] if isinstance(values, int) else [int(v) for v in values]


class NormalizeImage(v2.Transform):
    """uint8 (or float in [0, 1]) image -> float32 ``(x - mean) / std`` in one pass over a fresh
    buffer; v2.ToDtype + v2.Normalize took several times longer on large images."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        scale = 255.0 if inpt.dtype == torch.uint8 else 1.0
        out = inpt.as_subclass(Tensor).to(torch.float32)
        out.sub_(self.mean * scale).mul_(self.inv_std / scale)
        return tv_tensors.wrap(out, like=inpt)


def denormalize(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """ImageNet-normalised [3, H', W'] (possibly padded) -> uint8 [3, h, w] of its real part
    (``size`` = (h, w)): the inverse of :class:`NormalizeImage`, for drawing."""
    h, w = size
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (pixels[:, :h, :w].float().cpu() * std + mean).clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8)


def _finish(drop_empty: bool) -> list[v2.Transform]:
    steps: list[v2.Transform] = [BoxesFromMasks(), v2.ClampBoundingBoxes()]
    return steps + ([DropEmptyBoxes()] if drop_empty else []) + [NormalizeImage()]


def make_train_transforms(
    scales: Sequence[int] = PAPER_SCALES,
    max_size: int | None = PAPER_MAX_SIZE,
    crop_resize_scales: Sequence[int] = PAPER_CROP_RESIZE_SCALES,
    crop_size: Sequence[int] = PAPER_CROP_SIZE,
    flip_prob: float = 0.5,
    crop_prob: float = 0.5,
) -> v2.Compose:
    """The paper's training augmentation; defaults are the paper's values (see module doc)."""
    scales, crop_resize_scales = _ints(scales), _ints(crop_resize_scales)
    max_size = None if max_size is None else int(max_size)
    lo, hi = _ints(crop_size)
    resize = v2.RandomShortestSize(scales, max_size=max_size)
    crop_then_resize = v2.Compose(
        [v2.RandomShortestSize(crop_resize_scales), RandomSizeCrop(lo, hi), resize]
    )
    choice = v2.RandomChoice([resize, crop_then_resize], p=[1.0 - crop_prob, crop_prob])
    return v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(flip_prob), choice, *_finish(True)])


def make_eval_transforms(size: int = 800, max_size: int | None = PAPER_MAX_SIZE) -> v2.Compose:
    """Resize the shorter side to ``size`` (longer <= ``max_size``), then normalise."""
    max_size = None if max_size is None else int(max_size)
    return v2.Compose([v2.ToImage(), v2.Resize(int(size), max_size=max_size), *_finish(False)])


def make_base_transforms() -> v2.Compose:
    """No geometry: tensor conversion and ImageNet normalisation only."""
    return v2.Compose([v2.ToImage(), *_finish(False)])


def boxes_to_normalized_cxcywh(boxes: tv_tensors.BoundingBoxes) -> Tensor:
    """Absolute boxes (any tv_tensors format) on canvas (H, W) -> float32 [T, 4] normalised
    cxcywh in [0, 1], relative to that canvas."""
    height, width = boxes.canvas_size
    plain = boxes.as_subclass(Tensor).to(torch.float32)
    cxcywh = box_convert(plain, in_fmt=boxes.format.name.lower(), out_fmt="cxcywh")
    return cxcywh / torch.tensor([width, height, width, height], dtype=torch.float32)
