"""Turn DETR's raw outputs into scored, labelled, absolute xyxy detections per image."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert


class PostProcess(nn.Module):
    """Detections for evaluation or prediction.

    Softmax heads (focal=False): one detection per query; its score and label are those of the
    best *real* class, the no-object column being excluded, so a query whose top class is
    "no object" still reports its best real class (what official DETR does, worth ~2 AP).
    Focal heads (focal=True): sigmoid scores, and the top_k highest-scoring (query, class) pairs
    over all Q*C are kept (top_k None -> Q), so one query may give several labels.

    Args:
        top_k: keep only the top_k highest-scoring detections per image, sorted by score
            descending (softmax, None: all Q, in query order).
        score_threshold: drop detections with score < score_threshold (0 keeps everything).
        focal: sigmoid class head without a no-object column.
    """

    def __init__(
        self, top_k: int | None = None, score_threshold: float = 0.0, focal: bool = False
    ) -> None:
        super().__init__()
        if top_k is not None and top_k < 1:
            raise ValueError(f"PostProcess: top_k={top_k}; use a positive integer or None.")
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.focal = focal

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], target_sizes: Tensor) -> list[dict[str, Tensor]]:
        """
        Args:
            outputs: "pred_logits" [B, Q, C+1] (focal: [B, Q, C]), "pred_boxes" [B, Q, 4]
                normalised cxcywh.
            target_sizes: [B, 2] int64 (h, w) of the image each box is scaled to (the original
                image size for COCO evaluation).
        Returns:
            B dicts: "scores" [K] float, "labels" [K] int64, "boxes" [K, 4] absolute xyxy pixels.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if target_sizes.shape != (logits.shape[0], 2):
            raise ValueError(
                f"PostProcess: target_sizes has shape {tuple(target_sizes.shape)}; expected "
                f"({logits.shape[0]}, 2) = one (h, w) per image (targets' 'orig_size')."
            )
        h, w = target_sizes.to(boxes).unbind(1)
        scale = torch.stack([w, h, w, h], dim=1)[:, None, :]
        boxes = box_convert(boxes, "cxcywh", "xyxy") * scale
        if self.focal:
            scores, labels, query = self._focal_topk(logits)
            boxes = boxes.gather(1, query[..., None].expand(-1, -1, 4))
        else:
            scores, labels = logits.softmax(-1)[..., :-1].max(-1)
            if self.top_k is not None:
                scores, query = scores.topk(min(self.top_k, scores.shape[1]), dim=1)
                labels = labels.gather(1, query)
                boxes = boxes.gather(1, query[..., None].expand(-1, -1, 4))
        results = []
        for s, lab, box in zip(scores, labels, boxes, strict=True):
            keep = s >= self.score_threshold
            results.append({"scores": s[keep], "labels": lab[keep], "boxes": box[keep]})
        return results

    def _focal_topk(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B, Q, C] logits -> scores, labels, query index, each [B, k] sorted by score."""
        _, num_queries, num_classes = logits.shape
        flat = logits.sigmoid().flatten(1)
        k = min(self.top_k or num_queries, flat.shape[1])
        scores, idx = flat.topk(k, dim=1)
        return scores, idx % num_classes, idx // num_classes
