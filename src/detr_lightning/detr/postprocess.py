"""Turn DETR's raw outputs into scored, labelled, absolute xyxy detections per image."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_or_default


class PostProcess(nn.Module):
    """Detections for evaluation or prediction, chosen by the class scoring
    (:meth:`~detr_lightning.detr.class_scoring.SoftmaxScoring.detections`).

    The paper's softmax head (``scoring`` None): one detection per query; its score and label
    are those of the best *real* class, the no-object column being excluded, so a query whose
    top class is "no object" still reports its best real class (what official DETR does, worth
    ~2 AP). A sigmoid (focal) scoring keeps the top_k highest-scoring (query, class) pairs over
    all Q*C (top_k None -> Q), so one query may give several labels.

    Args:
        top_k: keep only the top_k highest-scoring detections per image, sorted by score
            descending (softmax, None: all Q, in query order).
        score_threshold: drop detections with score < score_threshold (0 keeps everything).
        scoring: the class scoring shared with the model and the criterion (None: the paper's).
    """

    def __init__(
        self,
        top_k: int | None = None,
        score_threshold: float = 0.0,
        scoring: SoftmaxScoring | None = None,
    ) -> None:
        super().__init__()
        if top_k is not None and top_k < 1:
            raise ValueError(f"PostProcess: top_k={top_k}; use a positive integer or None.")
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.scoring = scoring_or_default(scoring)

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], target_sizes: Tensor) -> list[dict[str, Tensor]]:
        """
        Args:
            outputs: "pred_logits" [B, Q, K] (K = C+1, or C for a sigmoid scoring), "pred_boxes"
                [B, Q, 4] normalised cxcywh.
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
        scores, labels, query = self.scoring.detections(logits, self.top_k)
        boxes = boxes.gather(1, query[..., None].expand(-1, -1, 4))
        results = []
        for s, lab, box in zip(scores, labels, boxes, strict=True):
            keep = s >= self.score_threshold
            results.append({"scores": s[keep], "labels": lab[keep], "boxes": box[keep]})
        return results
