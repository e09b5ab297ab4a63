"""Post-processing of DETR's masks: instance masks per detection (:class:`PostProcessSegm`) and
a panoptic segmentation per image (:class:`PostProcessPanoptic`).

Both take ``pred_masks`` [B, Q, h, w] logits on the padded canvas. The canvas defaults to the
largest processed image size of the batch (what collate pads to, and what the official code
assumes); pass ``canvas_size`` (``pixel_values.shape[-2:]``) when the batch was padded further
(``pad_to_multiple``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from detr_lightning.data.panoptic_png import ids_to_rgb
from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_or_default

Sizes = Tensor | Sequence[Sequence[int]]


def _size_list(sizes: Sizes) -> list[tuple[int, int]]:
    """[B, 2] tensor or B (h, w) pairs -> B (h, w) int tuples."""
    if isinstance(sizes, Tensor):
        sizes = sizes.tolist()
    return [(int(h), int(w)) for h, w in sizes]


def _canvas(sizes: list[tuple[int, int]], canvas_size: Sequence[int] | None) -> tuple[int, int]:
    if canvas_size is not None:
        return int(canvas_size[0]), int(canvas_size[1])
    return max(h for h, _ in sizes), max(w for _, w in sizes)


def id_map_to_png(segment_map: Tensor) -> bytes:
    """[H, W] integer segment ids -> the COCO panoptic PNG (id = R + 256 G + 256^2 B)."""
    with io.BytesIO() as buffer:
        Image.fromarray(ids_to_rgb(segment_map.cpu().numpy())).save(buffer, format="PNG")
        return buffer.getvalue()


class PostProcessSegm(nn.Module):
    """Binary masks for detections, at the original image size (official ``PostProcessSegm``).

    Args:
        threshold: a pixel belongs to the mask where sigmoid(logit) > threshold.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    @torch.no_grad()
    def forward(
        self,
        results: list[dict[str, Any]],
        outputs: dict[str, Any],
        orig_target_sizes: Sizes,
        max_target_sizes: Sizes,
        canvas_size: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Add ``masks`` [Q, 1, H_i, W_i] uint8 (0/1, at ``orig_target_sizes[i]``) to each of the
        B result dicts (one mask per query, in query order, as official: use
        ``PostProcess(top_k=None, score_threshold=0)`` for the boxes so rows line up).

        Args:
            results: B dicts (e.g. :class:`~detr_lightning.detr.postprocess.PostProcess`'s).
            outputs: the model's, with ``pred_masks`` [B, Q, h, w] logits.
            orig_target_sizes: [B, 2] (h, w) original image sizes (targets' ``orig_size``).
            max_target_sizes: [B, 2] (h, w) processed sizes (targets' ``size``).
            canvas_size: (H, W) of the padded batch; default the largest processed size.
        """
        sizes, origs = _size_list(max_target_sizes), _size_list(orig_target_sizes)
        if not len(sizes) == len(origs) == len(results) == outputs["pred_masks"].shape[0]:
            raise ValueError("PostProcessSegm: results, outputs and sizes differ in length")
        masks = F.interpolate(
            outputs["pred_masks"], size=_canvas(sizes, canvas_size), mode="bilinear",
            align_corners=False,
        )  # fmt: skip
        masks = (masks.sigmoid() > self.threshold).cpu()
        for result, mask, (h, w), orig in zip(results, masks, sizes, origs, strict=True):
            real = mask[:, None, :h, :w].float()
            result["masks"] = F.interpolate(real, size=orig, mode="nearest").byte()
        return results


class PostProcessPanoptic(nn.Module):
    """Panoptic segmentation per image from DETR's outputs (paper Sec. 4.4).

    A query is kept when its best class's probability exceeds ``threshold`` and, under the
    paper's softmax, that best class is not "no object" (the official rule; it only matters for
    thresholds under 0.5); a label missing from a mapping ``is_thing_map`` is no category (COCO's
    unused slots) and its queries are dropped, the probabilities unchanged. Every pixel goes
    to the kept query with the highest mask logit (so no pixel is in two segments); the queries
    of one stuff class form one segment; segments under ``min_area`` pixels are dropped and
    their pixels re-assigned among the rest, repeatedly. Unlike the official code, segment ids
    start at 1 (0 is VOID in the COCO format), stuff stays merged after the small-segment
    filter, an image with no segment is all VOID with an empty ``segments_info``, and in a
    padded batch each image's masks are cut out of the padded canvas before they are resized
    (the official code resizes the whole canvas's masks onto the image, which stretches every
    padded image's segments over its padding).

    Args:
        is_thing_map: label -> True for thing classes, False for stuff (a dict or a sequence
            indexed by the model's label; a dict may leave out labels of no category).
        threshold: class-confidence threshold (strict, as official).
        min_area: segments with fewer pixels (at the output size) are dropped (official: 5).
        return_png: also return the COCO panoptic PNG bytes as ``png_string``.
        scoring: the model's class scoring (None: the paper's softmax); a query's confidence is
            its best real class's probability.
    """

    def __init__(
        self,
        is_thing_map: Mapping[int, bool] | Sequence[bool],
        threshold: float = 0.85,
        min_area: int = 5,
        return_png: bool = False,
        scoring: SoftmaxScoring | None = None,
    ) -> None:
        super().__init__()
        self.scoring = scoring_or_default(scoring)
        self.is_thing_map = is_thing_map
        self.threshold = threshold
        self.min_area = max(int(min_area), 1)  # an empty segment is never reported
        self.return_png = return_png

    @torch.no_grad()
    def forward(
        self,
        outputs: dict[str, Any],
        processed_sizes: Sizes,
        target_sizes: Sizes | None = None,
        canvas_size: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """
        Args:
            outputs: ``pred_logits`` [B, Q, K] (the paper's K = C + 1, last column "no
                object"; a sigmoid scoring's K = C) and
                ``pred_masks`` [B, Q, h, w] logits on the padded canvas.
            processed_sizes: [B, 2] (h, w) of each image as fed to the model (targets' ``size``).
            target_sizes: [B, 2] (h, w) of the output (targets' ``orig_size``); default the
                processed sizes.
            canvas_size: (H, W) of the padded batch; default the largest processed size.
        Returns:
            Per image: ``segment_map`` int64 [H, W] at the target size (0 = VOID, segments
            1..N), ``segments_info``: N dicts {id, category_id (the model's label; the caller
            maps it to dataset ids), isthing, area (pixels)}, and with ``return_png`` the COCO
            PNG bytes ``png_string``. Tensors stay on the outputs' device.
        """
        sizes = _size_list(processed_sizes)
        targets = sizes if target_sizes is None else _size_list(target_sizes)
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if not len(sizes) == len(targets) == logits.shape[0] == masks.shape[0]:
            raise ValueError("PostProcessPanoptic: outputs and sizes differ in batch size")
        canvas = _canvas(sizes, canvas_size)
        results = []
        for cur_logits, cur_masks, (h, w), target in zip(
            logits, masks, sizes, targets, strict=True
        ):
            scores, labels = self.scoring.probabilities(cur_logits).max(-1)
            keep = scores > self.threshold
            if self.scoring.no_object:
                keep &= self.scoring.is_object(cur_logits)
            if isinstance(self.is_thing_map, Mapping):
                known = [label in self.is_thing_map for label in range(cur_logits.shape[-1])]
                keep &= torch.tensor(known, device=keep.device)[labels]
            kept = cur_masks[keep][None]
            if kept.shape[1]:
                kept = F.interpolate(kept, size=canvas, mode="bilinear", align_corners=False)
            # The padded part of the canvas is cut off before the image is resized.
            result = self.segment(kept[0, :, :h, :w], labels[keep].tolist(), target)
            if self.return_png:
                result["png_string"] = id_map_to_png(result["segment_map"])
            results.append(result)
        return results

    def segment(self, masks: Tensor, labels: list[int], size: tuple[int, int]) -> dict[str, Any]:
        """One image: masks [K, h, w] logits of the kept queries at the processed size, their
        labels, the output size (H, W) -> ``segment_map`` [H, W] and ``segments_info``."""
        # A segment is one thing query, or all the kept queries of one stuff class.
        segments: list[tuple[int, list[int]]] = []
        stuff: dict[int, int] = {}
        for k, label in enumerate(labels):
            if self.is_thing_map[label]:
                segments.append((label, [k]))
            elif label in stuff:
                segments[stuff[label]][1].append(k)
            else:
                stuff[label] = len(segments)
                segments.append((label, [k]))
        while True:
            segment_map = self._paint(masks, segments, size)
            area = torch.bincount(segment_map.flatten(), minlength=len(segments) + 1)[1:].tolist()
            small = [a < self.min_area for a in area]
            if not any(small):
                break
            # Drop whole segments (a stuff segment with all its queries) and re-assign pixels.
            segments = [seg for seg, s in zip(segments, small, strict=True) if not s]
        info = [
            {"id": i, "category_id": label, "isthing": bool(self.is_thing_map[label]), "area": a}
            for i, ((label, _), a) in enumerate(zip(segments, area, strict=True), start=1)
        ]
        return {"segment_map": segment_map, "segments_info": info}

    @staticmethod
    def _paint(
        masks: Tensor, segments: list[tuple[int, list[int]]], size: tuple[int, int]
    ) -> Tensor:
        """Segment ids (1-based; 0 where no segment is left) per pixel at ``size``: every pixel
        takes the segment of its highest-logit query, at the processed size, then the id map is
        resized (nearest, never blending ids)."""
        if not segments:
            return torch.zeros(size, dtype=torch.long, device=masks.device)
        queries = [k for _, ks in segments for k in ks]
        segment_of = torch.tensor(
            [i for i, (_, ks) in enumerate(segments, start=1) for _ in ks], device=masks.device
        )
        ids = segment_of[masks[queries].argmax(0)]
        resized = F.interpolate(ids[None, None].float(), size=size, mode="nearest-exact")
        return resized[0, 0].long()
