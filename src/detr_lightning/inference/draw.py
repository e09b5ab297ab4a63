"""Draw detections on an image: boxes with "name score" labels, and segment masks (panoptic).

Colours are fixed per class (a hashed palette), so one class has the same colour in every
image. Masks are drawn first and boxes on top, so the code is ready for a panoptic head: give
``masks`` [K, H, W] bool and each segment is filled in its class colour.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_or_default
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


def query_detections(
    outputs: dict, sizes: Tensor, scoring: SoftmaxScoring | None = None
) -> list[dict[str, Tensor]]:
    """One detection per query (its best real class), so that each keeps its query index.

    Args:
        outputs: "pred_logits" [B, Q, C(+1)], "pred_boxes" [B, Q, 4] normalised cxcywh.
        sizes: [B, 2] (h, w) the boxes are scaled to.
        scoring: the model's class scoring (None: the paper's softmax).
    Returns:
        B dicts of "scores" [Q], "labels" [Q], "boxes" [Q, 4] absolute xyxy (query order), CPU.
    """
    logits = outputs["pred_logits"].float()
    scores, labels = scoring_or_default(scoring).probabilities(logits).max(-1)
    h, w = sizes.to(logits).unbind(1)
    scale = torch.stack([w, h, w, h], 1)[:, None]
    boxes = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy") * scale
    return [
        {"scores": s.cpu(), "labels": lab.cpu(), "boxes": b.cpu()}
        for s, lab, b in zip(scores, labels, boxes, strict=True)
    ]


def instance_masks(
    logits: Tensor,
    canvas: tuple[int, int],
    size: tuple[int, int],
    orig_size: tuple[int, int],
    threshold: float = 0.5,
) -> Tensor:
    """Mask logits of one image's queries -> bool masks on the original image (as the official
    ``PostProcessSegm``): upsample to the padded canvas, crop the image's real part, resize.

    Args:
        logits: [K, h_f, w_f] ``pred_masks`` rows (the panoptic head's, on the padded canvas).
        canvas: (H, W) of the padded batch; size: (h, w) of this image in it.
        orig_size: (H0, W0) of the original image.
    Returns:
        bool [K, H0, W0].
    """
    if len(logits) == 0:
        return torch.zeros(0, *orig_size, dtype=torch.bool)
    up = F.interpolate(logits[None].float(), size=canvas, mode="bilinear", align_corners=False)
    real = (up[0, :, : size[0], : size[1]].sigmoid() > threshold).float()
    return F.interpolate(real[None], size=orig_size, mode="nearest")[0].bool().cpu()


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
    color: Color | None = None,
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
        font, font_size: a TrueType font file and its size (both None: PIL's default bitmap
            font; a size alone: matplotlib's DejaVu Sans at that size).
        mask_alpha: opacity of the segment colours.
        color: one colour for every detection (None: each class its own, :func:`class_color`).
    Returns:
        uint8 [3, H, W]; the input is not modified.
    """
    keep = select_detections(pred["scores"].detach().cpu(), score_threshold, top_k)
    # Drawn lowest score first: what is drawn later covers what overlaps it (a query with
    # several labels, under a sigmoid scoring, has one box and one label place), so the
    # best detection stays readable on top.
    keep = keep.flip(0)
    out = image.cpu()
    if len(keep) == 0:
        return out.clone()
    labels = pred["labels"].detach().cpu()[keep].tolist()
    scores = pred["scores"].detach().cpu()[keep].tolist()
    colors = [color or class_color(lab) for lab in labels]
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
    if font is None and font_size is not None:
        # torchvision sizes TrueType fonts only: matplotlib (a dependency) bundles one.
        from matplotlib import font_manager

        font = font_manager.findfont("DejaVu Sans")
    kwargs = {"font": font, "font_size": font_size} if font else {}
    # White text on a label box of the class colour: readable on any background.
    return draw_bounding_boxes(out, boxes, text, colors=colors, width=line_width,
                               label_colors="white", fill_labels=True, **kwargs)  # fmt: skip
