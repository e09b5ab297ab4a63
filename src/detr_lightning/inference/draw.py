"""Draw detections on an image: boxes with "name score" labels, and segment masks (panoptic).

Colours are fixed per class (a hashed palette), so one class has the same colour in every
image. Masks are drawn first and boxes on top, so the code is ready for a panoptic head: give
``masks`` [K, H, W] bool and each segment is filled in its class colour.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from detr_lightning.inference.results import label_name

Color = tuple[int, int, int]


def class_color(label: int) -> Color:
    """A saturated colour for ``label``; neighbouring labels get distant hues (golden ratio)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def select_detections(
    scores: Tensor, score_threshold: float = 0.5, top_k: int | None = None
) -> Tensor:
    """Indices [K'] of the detections to show: score >= threshold, highest first, at most top_k."""
    keep = torch.nonzero(scores >= score_threshold).flatten()
    keep = keep[scores[keep].argsort(descending=True)]
    return keep if top_k is None else keep[:top_k]


def draw_predictions(
    image: Tensor,
    pred: dict[str, Tensor],
    category_ids: Sequence[int],
    names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    top_k: int | None = None,
    line_width: int = 2,
    font: str | None = None,
    font_size: int | None = None,
    mask_alpha: float = 0.5,
) -> Tensor:
    """The image with the selected detections drawn.

    Args:
        image: uint8 [3, H, W], the original image.
        pred: "boxes" [K, 4] absolute xyxy in that image's pixels, "scores" [K], "labels" [K]
            contiguous labels, and optionally "masks" [K, H, W] bool (panoptic segments).
        category_ids: label -> dataset category id (printed when no name is known).
        names: label -> class name ("" where unknown), or None.
        score_threshold, top_k: which detections to draw (:func:`select_detections`).
        line_width: box outline in pixels.
        font, font_size: a TrueType font file and its size (None: PIL's default bitmap font).
        mask_alpha: opacity of the segment colours.
    Returns:
        uint8 [3, H, W]; the input is not modified.
    """
    keep = select_detections(pred["scores"].detach().cpu(), score_threshold, top_k)
    out = image.cpu()
    if len(keep) == 0:
        return out.clone()
    labels = pred["labels"].detach().cpu()[keep].tolist()
    scores = pred["scores"].detach().cpu()[keep].tolist()
    colors = [class_color(lab) for lab in labels]
    masks = pred.get("masks")
    if masks is not None:
        out = draw_segmentation_masks(
            out, masks.detach().cpu()[keep].bool(), alpha=mask_alpha, colors=colors
        )
    h, w = out.shape[-2:]
    boxes = pred["boxes"].detach().float().cpu()[keep]
    # Out-of-image coordinates would make PIL draw nothing for the box.
    boxes = torch.stack([boxes[:, 0].clamp(0, w - 1), boxes[:, 1].clamp(0, h - 1),
                         boxes[:, 2].clamp(0, w - 1), boxes[:, 3].clamp(0, h - 1)], 1)  # fmt: skip
    text = [
        f"{label_name(lab, category_ids, names)} {s:.2f}"
        for lab, s in zip(labels, scores, strict=True)
    ]
    kwargs = {"font": font, "font_size": font_size} if font else {}
    return draw_bounding_boxes(out, boxes, text, colors=colors, width=line_width, **kwargs)
