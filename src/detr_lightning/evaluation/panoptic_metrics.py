"""PQ accumulated as torchmetrics: :class:`PanopticQualityMetric` (per-class sums, for your own
loops) and :class:`ImagePanopticQuality` (one entry per image id, what LitDETR's evaluation uses:
the same on any number of processes, a padded repeat counted once). Both equal
:func:`~detr_lightning.evaluation.panoptic.pq_compute` on the same images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric

from detr_lightning.evaluation.image_gather import GatherImageLists
from detr_lightning.evaluation.panoptic import ClassStats, match_image, pq_keys, summarize
from detr_lightning.evaluation.panoptic_io import PanopticImage

_STATES = (("tp", torch.int64), ("fp", torch.int64), ("fn", torch.int64), ("iou", torch.float64))


class PanopticQualityMetric(Metric):
    """PQ accumulator for your own loops: per-class tp / fp / fn / IoU-sum states, summed over
    DDP ranks (an image a ``DistributedSampler`` repeats to pad the ranks counts twice;
    LitDETR uses :class:`ImagePanopticQuality`,
    which keeps one entry per image id).

    ``categories``: ``[{"id", "isthing"}, ...]`` (the panoptic json's ``categories``; ids may
    be any ints). ``update(preds, targets)`` takes one :class:`PanopticImage` each, or
    equal-length sequences of them (a batch); ``compute()`` returns floats in [0, 1]:
    ``PQ, SQ, RQ`` (all classes), ``PQ_th, SQ_th, RQ_th`` (things), ``PQ_st, SQ_st, RQ_st``
    (stuff), equal to :func:`pq_compute` on the same images.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, categories: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.isthing = {int(cat["id"]): cat["isthing"] == 1 for cat in categories}
        if len(self.isthing) != len(categories):
            raise ValueError("PanopticQualityMetric: categories have duplicate ids")
        self.index = {cat: i for i, cat in enumerate(self.isthing)}
        for name, dtype in _STATES:
            self.add_state(name, torch.zeros(len(self.index), dtype=dtype), dist_reduce_fx="sum")

    def update(
        self,
        preds: PanopticImage | Sequence[PanopticImage],
        targets: PanopticImage | Sequence[PanopticImage],
    ) -> None:
        if isinstance(preds, Mapping):
            preds, targets = [preds], [targets]
        if len(preds) != len(targets):
            raise ValueError(f"update: {len(preds)} predictions for {len(targets)} targets")
        # Counts travel as float64 (exact below 2**53) to build one [4, K] delta per batch.
        delta = torch.zeros(len(_STATES), len(self.index), dtype=torch.float64)
        for pred, gt in zip(preds, targets, strict=True):
            for cat, s in match_image(pred, gt, self.index).items():
                row = torch.tensor([s.tp, s.fp, s.fn, s.iou], dtype=torch.float64)
                delta[:, self.index[cat]] += row
        for (name, dtype), row in zip(_STATES, delta, strict=True):
            state = getattr(self, name)
            setattr(self, name, state + row.to(device=state.device, dtype=dtype))

    def compute(self) -> dict[str, float]:
        columns = [getattr(self, name).tolist() for name, _ in _STATES]
        stats = {cat: ClassStats(*(col[i] for col in columns)) for cat, i in self.index.items()}
        return pq_keys(summarize(stats, self.isthing))


class ImagePanopticQuality(GatherImageLists, Metric):
    """PQ (panopticapi's definition, :mod:`.panoptic`) with one stats entry per image.

    ``update(pred, gt, image_id, categories)``; ``compute()`` gives the :data:`~detr_lightning.evaluation.panoptic.PQ_KEYS` as
    floats in [0, 1], equal to :func:`~detr_lightning.evaluation.panoptic.pq_compute` on the
    same images, and the same on any number of processes (module docstring). It also sets
    :attr:`per_class`: ``{category_id: {"PQ", "SQ", "RQ", "tp", "fp", "fn", "isthing"}}`` for
    every category, PQ / SQ / RQ -1 where ``tp + fp + fn == 0`` (no segment of it in either the
    predictions or the ground truth: undefined, and left out of the means).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Per image: its id [1], and rows [n, 5] float64 (category_id, tp, fp, fn, iou_sum).
        self.add_state("image_ids", default=[], dist_reduce_fx=None)
        self.add_state("rows", default=[], dist_reduce_fx=None)
        self.isthing: dict[int, bool] = {}
        self.per_class: dict[int, dict[str, Any]] = {}

    def update(  # type: ignore[override]
        self,
        pred: PanopticImage,
        gt: PanopticImage,
        image_id: int,
        categories: Sequence[Mapping[str, Any]],
    ) -> None:
        self.isthing = {int(c["id"]): int(c["isthing"]) == 1 for c in categories}
        stats = match_image(pred, gt, self.isthing)
        rows = [[cat, s.tp, s.fp, s.fn, s.iou] for cat, s in sorted(stats.items())]
        rows = rows or [[-1, 0, 0, 0, 0.0]]  # an image without segments: a row compute skips
        self.rows.append(torch.tensor(rows, dtype=torch.float64, device=self.device))
        self.image_ids.append(torch.tensor([int(image_id)], device=self.device))

    def compute(self) -> dict[str, float]:
        ids = [int(i) for i in self.image_ids]
        first: dict[int, int] = {}
        for pos, image_id in enumerate(ids):
            first.setdefault(image_id, pos)  # a padded repeat counts once
        total: dict[int, ClassStats] = defaultdict(ClassStats)
        for image_id in sorted(first):  # a fixed summation order: exact across world sizes
            for cat, tp, fp, fn, iou in self.rows[first[image_id]].tolist():
                if cat >= 0:
                    total[int(cat)] += ClassStats(int(tp), int(fp), int(fn), iou)
        results = summarize(total, self.isthing)
        self.per_class = {}
        for cat, isthing in self.isthing.items():
            s = total.get(cat, ClassStats())
            pq = (
                results["per_class"][cat]
                if s.tp + s.fp + s.fn
                else dict.fromkeys(("pq", "sq", "rq"), -1.0)
            )
            self.per_class[cat] = {**{k.upper(): v for k, v in pq.items()},
                                   "tp": s.tp, "fp": s.fp, "fn": s.fn, "isthing": isthing}  # fmt: skip
        return pq_keys(results)
