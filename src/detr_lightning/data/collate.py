"""Pad a list of ``(image, target)`` samples into a :class:`Batch`."""

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Batch:
    """A padded batch.

    pixel_values: float [B, 3, H, W], ImageNet-normalised, zero on padding.
    pixel_mask: bool [B, H, W], True on real pixels (the opposite of official DETR's mask).
    targets: one dict per image (labels [T], boxes [T, 4] normalised cxcywh relative to the
        unpadded image, image_id, orig_size [2], size [2], iscrowd [T], area [T]); panoptic
        targets also hold masks, bool [T, H, W] padded to the batch's canvas (False on padding).
    """

    pixel_values: Tensor
    pixel_mask: Tensor
    targets: list[dict[str, Tensor]]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """Move every tensor (targets included) to ``device``; Lightning calls this."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Page-lock every tensor; DataLoader(pin_memory=True) calls this on custom batches."""
        return self._map(Tensor.pin_memory)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "Batch":
        def apply(t: Any) -> Any:
            return fn(t) if isinstance(t, Tensor) else t

        return Batch(
            pixel_values=fn(self.pixel_values),
            pixel_mask=fn(self.pixel_mask),
            targets=[{k: apply(v) for k, v in t.items()} for t in self.targets],
        )

    def __len__(self) -> int:
        return self.pixel_values.shape[0]


def collate(
    samples: Sequence[tuple[Tensor, dict[str, Tensor]]], pad_to_multiple: int | None = None
) -> Batch:
    """Stack images of different sizes into one zero-padded tensor.

    samples: ``(image [3, h_i, w_i] float, target)`` pairs. Images go to the top-left corner of a
    canvas ``[B, 3, H, W]`` with H, W the largest h_i, w_i, each rounded up to a multiple of
    ``pad_to_multiple`` when given; ``pixel_mask[i, :h_i, :w_i]`` is True, the rest False.

    A target with ``masks`` (bool [T, h_i, w_i], the image's size) gets them padded the same way
    to [T, H, W], False on padding: the mask loss upsamples predictions to the padded canvas, so
    targets of one batch share its size. Boxes stay relative to the unpadded image.
    """
    if not samples:
        raise ValueError("collate() got an empty list of samples")
    images = [img for img, _ in samples]
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    if pad_to_multiple:
        height = math.ceil(height / pad_to_multiple) * pad_to_multiple
        width = math.ceil(width / pad_to_multiple) * pad_to_multiple
    channels, dtype = images[0].shape[0], images[0].dtype
    # empty + zeroing only the padding: every pixel is then written once, not twice
    pixel_values = torch.empty(len(images), channels, height, width, dtype=dtype)
    pixel_mask = torch.zeros(len(images), height, width, dtype=torch.bool)
    for i, img in enumerate(images):
        h, w = img.shape[-2:]
        pixel_values[i, :, :h, :w] = img
        pixel_values[i, :, :h, w:] = 0
        pixel_values[i, :, h:, :] = 0
        pixel_mask[i, :h, :w] = True
    return Batch(
        pixel_values, pixel_mask, [_pad_masks(t, img, height, width) for img, t in samples]
    )


def _pad_masks(target: dict[str, Tensor], image: Tensor, height: int, width: int) -> dict:
    """A copy of ``target`` with its ``masks`` (if any) zero-padded to [T, height, width]."""
    target = dict(target)
    if "masks" not in target:
        return target
    masks = target["masks"]
    if masks.ndim != 3 or masks.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"collate: image_id {int(target.get('image_id', -1))} has masks of shape "
            f"{tuple(masks.shape)}; expected [T, {image.shape[-2]}, {image.shape[-1]}] (the "
            f"transformed image's size)."
        )
    padded = torch.zeros(masks.shape[0], height, width, dtype=torch.bool)
    padded[:, : masks.shape[1], : masks.shape[2]] = masks
    target["masks"] = padded
    return target


def make_collate_fn(pad_to_multiple: int | None = None) -> Callable[[Sequence], Batch]:
    """A picklable collate function (for DataLoader workers started with spawn)."""
    return functools.partial(collate, pad_to_multiple=pad_to_multiple)
