"""Hungarian matching between DETR's predictions and the ground-truth objects of each image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_or_default

MatchIndices = list[tuple[Tensor, Tensor]]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising DETR's matching cost.

    cost = cost_class * class_cost + cost_bbox * L1(cxcywh) + cost_giou * (-GIoU(xyxy)),
    where class_cost is the class scoring's: the paper's -softmax probability of the target
    class (:class:`~detr_lightning.detr.class_scoring.SoftmaxScoring`, ``scoring`` None), or an
    extension's (e.g. the focal cost of a sigmoid head). Each image's [Q, T] block is built on
    its own, so time and memory grow linearly with the batch, unlike the official [B*Q, sum(T)]
    matrix.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        scoring: SoftmaxScoring | None = None,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError(
                "HungarianMatcher: cost_class, cost_bbox and cost_giou are all 0, so every "
                "assignment is equally good; set at least one of them (paper: 1, 5, 2)."
            )
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.scoring = scoring_or_default(scoring)

    def cost_matrix(
        self, logits: Tensor, boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor
    ) -> Tensor:
        """Matching cost of one image.

        Args:
            logits: [Q, K] class logits (the paper's K = C+1, the last "no object"; a sigmoid
                scoring's K = C).
            boxes: [Q, 4] predicted boxes, normalised cxcywh.
            tgt_labels: [T] int64 target classes.
            tgt_boxes: [T, 4] target boxes, normalised cxcywh.
        Returns:
            [Q, T] cost (lower = better match).
        """
        cls = self.scoring.match_cost(logits, tgt_labels)
        l1 = torch.cdist(boxes, tgt_boxes, p=1)
        giou = generalized_box_iou(
            box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        return self.cost_class * cls + self.cost_bbox * l1 - self.cost_giou * giou

    @staticmethod
    def _label_error(labels: Tensor, num_classes: int) -> str | None:
        """The message for target labels outside [0, num_classes) (labels on the host)."""
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            return (
                f"HungarianMatcher: target labels span [{int(labels.min())}, "
                f"{int(labels.max())}] but the class head has {num_classes} real classes; "
                "set num_classes to the dataset's class count (the no-object index is not a label)."
            )
        return None

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> MatchIndices:
        """Match every image's queries to its targets.

        Args:
            outputs: dict with
                "pred_logits": [B, Q, K] class logits (K = C+1, or C for a sigmoid scoring),
                "pred_boxes": [B, Q, 4] predicted boxes, normalised cxcywh.
            targets: list of B dicts with
                "labels": [T_b] int64 class indices,
                "boxes": [T_b, 4] target boxes, normalised cxcywh.
        Returns:
            list of B tuples (pred_idx, tgt_idx), int64 tensors of length K_b = min(Q, T_b) = T_b
            on the device of the predictions; pred_idx is sorted ascending and query pred_idx[k]
            is assigned to target tgt_idx[k]. Images without targets give two empty tensors.
        """
        return self.match_layers([outputs], targets)[0]

    @torch.no_grad()
    def match_layers(
        self, layers: Sequence[dict[str, Tensor]], targets: list[dict[str, Tensor]]
    ) -> list[MatchIndices]:
        """:meth:`forward` for several prediction sets against the same targets (every decoder
        layer): each image's cost block of all layers is computed on the device at once (in
        float32, also under autocast: bf16 ties would make the assignment arbitrary), copied to
        the host in ONE transfer with the labels' range, solved there per layer, and the
        indices go back in one copy without a sync. Returns one :data:`MatchIndices` per entry
        of ``layers``."""
        if not layers:
            return []
        device = layers[0]["pred_logits"].device
        for out in layers:
            if len(targets) != out["pred_logits"].shape[0]:
                raise ValueError(
                    f"HungarianMatcher: got {len(targets)} target dicts for a batch of "
                    f"{out['pred_logits'].shape[0]} predictions; pass exactly one target dict "
                    "per image."
                )
        if not targets:
            return [[] for _ in layers]
        # the columns beyond the real classes ("no object"): num_logits(0)
        num_classes = layers[0]["pred_logits"].shape[-1] - self.scoring.num_logits(0)
        labels = torch.cat([t["labels"].reshape(-1) for t in targets])
        # clamped for the cost only: an out-of-range label must not fault the device before the
        # host has read the range (sent with the costs) and raised the error that explains it
        safe = labels.clamp(0, max(num_classes - 1, 0)).split([len(t["labels"]) for t in targets])
        blocks = []  # per image: [L * Q, T_b], every layer's rows in one block
        with torch.autocast(device.type, enabled=False):
            logits = torch.stack([out["pred_logits"] for out in layers], 1).float()
            boxes = torch.stack([out["pred_boxes"] for out in layers], 1).float()
            num_queries = logits.shape[2]  # logits, boxes: [B, L, Q, *]
            for b, tgt in enumerate(targets):
                if len(tgt["labels"]) > num_queries:
                    raise ValueError(
                        f"HungarianMatcher: image {b} has {len(tgt['labels'])} targets but "
                        f"the model has only {num_queries} queries; DETR predicts at most one "
                        "object per query, so set num_queries >= the largest object count per "
                        "image."
                    )
                blocks.append(
                    self.cost_matrix(
                        logits[b].flatten(0, 1), boxes[b].flatten(0, 1), safe[b], tgt["boxes"]
                    )
                )
        extremes = torch.stack([labels.min(), labels.max()]) if labels.numel() else labels[:0]
        # the one device->host copy of the step's matching
        host = torch.cat([c.reshape(-1) for c in blocks] + [extremes.float()]).cpu()
        costs = host[: host.numel() - extremes.numel()].split([c.numel() for c in blocks])
        if error := self._label_error(host[host.numel() - extremes.numel() :], num_classes):
            raise ValueError(error)
        solved = []  # [image][layer] -> (rows, cols)
        for b, (block, cost) in enumerate(zip(blocks, costs, strict=True)):
            if not torch.isfinite(cost).all():
                raise ValueError(
                    f"HungarianMatcher: the cost matrix of image {b} contains NaN/inf: the "
                    "predictions are not finite (diverged training: lower the lr, clip "
                    "gradients) or a target box has zero width and height (fix the annotation)."
                )
            per_layer = cost.view(len(layers), num_queries, block.shape[-1]).numpy()
            solved.append([linear_sum_assignment(c) for c in per_layer])
        pairs, sizes = [], []
        for layer in range(len(layers)):  # layer-major, as returned
            for b in range(len(targets)):
                rows, cols = solved[b][layer]
                # scipy returns rows ascending already; kept explicit as callers rely on it
                order = rows.argsort(kind="stable")
                pairs += [torch.as_tensor(rows[order]), torch.as_tensor(cols[order])]
                sizes += [len(rows)] * 2
        flat = torch.cat(pairs).to(torch.int64).to(device, non_blocking=True).split(sizes)
        per_image = [(flat[2 * k], flat[2 * k + 1]) for k in range(len(sizes) // 2)]
        n = len(targets)
        return [per_image[i * n : (i + 1) * n] for i in range(len(layers))]
