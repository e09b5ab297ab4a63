"""Panoptic evaluation inside LitDETR: PQ / SQ / RQ and segm AP of a DETRsegm's outputs.

:class:`PanopticEvaluator` turns each evaluated batch into panoptic predictions
(:class:`~detr_lightning.detr.panoptic_postprocess.PostProcessPanoptic`) and instance masks
(:class:`~detr_lightning.detr.panoptic_postprocess.PostProcessSegm`), and scores them against
the dataset's original-size ground truth (``dataset.ground_truth(image_id)``, e.g.
:class:`~detr_lightning.data.coco_panoptic.CocoPanopticDataset`), looked up on each process for
the images of its own shard.

DDP: the ranks may evaluate different numbers of images, a few of them repeated to even out the
ranks. Both metrics keep one entry per image with its id, gathered over processes
(:mod:`~detr_lightning.evaluation.image_gather`), and count each image once, in image-id order,
so a multi-process evaluation equals the single-process one exactly (as ``CocoBoxAP``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detr_lightning.data.categories import thing_labels
from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_or_default
from detr_lightning.detr.panoptic_postprocess import PostProcessPanoptic, PostProcessSegm
from detr_lightning.evaluation.coco import CocoBoxAP
from detr_lightning.evaluation.panoptic import PQ_GROUPS
from detr_lightning.evaluation.panoptic_io import PanopticImage
from detr_lightning.evaluation.panoptic_metrics import ImagePanopticQuality


def ground_truth_dataset(trainer: Any, stage: str) -> Any:
    """The dataset evaluated in ``stage`` ("val" / "test"): the datamodule's split, else the
    dataloader's dataset. It must provide ``ground_truth(image_id)`` and ``categories``."""
    datamodule = getattr(trainer, "datamodule", None)
    dataset = getattr(datamodule, "datasets", {}).get(stage)
    if dataset is None:
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = getattr(loader, "dataset", None)
    if not (hasattr(dataset, "ground_truth") and hasattr(dataset, "categories")):
        raise ValueError(
            f"panoptic evaluation needs a {stage} dataset with ground_truth(image_id) and "
            f"categories (CocoPanopticDataset), got {type(dataset).__name__}: use "
            "data=coco_panoptic or data=shapes_panoptic (a PanopticDataModule)."
        )
    return dataset


class PanopticEvaluator(nn.Module):
    """PQ / SQ / RQ (all, things, stuff) and segm AP (thing classes, as the paper's Table 5) of
    one evaluation stage.

    Args:
        postprocess: partial :class:`PostProcessPanoptic` (``threshold``, ``min_area``); the
            thing map (from the dataset's categories) and the model's class ``scoring`` are
            filled in here.
        segm_postprocess: :class:`PostProcessSegm` for segm AP, or None to skip segm AP.
        segm_top_k: segm AP keeps the best ``segm_top_k`` thing queries per image.
        metric_backend: of the segm AP (``CocoBoxAP(iou_type="segm")``).
    """

    def __init__(
        self,
        postprocess: Callable[..., PostProcessPanoptic] = PostProcessPanoptic,
        segm_postprocess: PostProcessSegm | None = None,
        segm_top_k: int = 100,
        metric_backend: str = "faster_coco_eval",
    ) -> None:
        super().__init__()
        self.make_postprocess, self.segm_postprocess = postprocess, segm_postprocess
        self.segm_top_k = segm_top_k
        self.pq = ImagePanopticQuality()
        self.segm = CocoBoxAP(metric_backend, iou_type="segm") if segm_postprocess else None
        self.updated = False
        self.per_class: dict[int, dict[str, Any]] = {}  # ImagePanopticQuality.per_class

    @torch.no_grad()
    def update(
        self,
        outputs: dict[str, Any],
        pixel_values: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        dataset: Any,
        label_to_category_id: Sequence[int] | None = None,
        scoring: SoftmaxScoring | None = None,
    ) -> None:
        """One batch: outputs with ``pred_logits`` [B, Q, K] and ``pred_masks`` [B, Q, h, w];
        pixel_values [B, 3, H, W] (the padded canvas); targets with ``image_id``, ``size`` and
        ``orig_size``; the dataset giving the ground truth; the model's label -> category id
        (None: the dataset's); the model's class scoring (None: the paper's softmax)."""
        scoring = scoring_or_default(scoring)
        isthing = {int(c["id"]): int(c["isthing"]) == 1 for c in dataset.categories}
        ids = [int(c) for c in (label_to_category_id or dataset.label_to_category_id)]
        # Labels of no dataset category (unused COCO slots) are left out of the thing map: their
        # queries form no segment, and the other queries' probabilities stay as the model gave
        # them (as official, which never renormalises).
        known = thing_labels(dataset.categories, ids)
        postprocess = self.make_postprocess(is_thing_map=known, scoring=scoring)
        sizes = torch.stack([t["size"] for t in targets])
        origs = torch.stack([t["orig_size"] for t in targets])
        results = postprocess(outputs, sizes, origs, canvas_size=pixel_values.shape[-2:])
        logits = outputs["pred_logits"]
        thing_map = [known.get(label, False) for label in range(len(ids))]
        categories = [{"id": c, "isthing": int(t)} for c, t in isthing.items()]
        for i, (result, target) in enumerate(zip(results, targets, strict=True)):
            image_id = int(target["image_id"])
            gt = dataset.ground_truth(image_id)
            segments = [dict(s, category_id=ids[s["category_id"]]) for s in result["segments_info"]]
            pred = {"ids": result["segment_map"].cpu(), "segments_info": segments}
            self.pq.update(pred, gt, image_id, categories)
            if self.segm is not None:
                self._update_segm(logits[i], outputs["pred_masks"][i], pixel_values, target, gt,
                                  ids, thing_map, scoring)  # fmt: skip
        self.updated = True

    def _update_segm(
        self,
        logits: Tensor,
        masks: Tensor,
        pixel_values: Tensor,
        target: Mapping[str, Tensor],
        gt: PanopticImage,
        ids: list[int],
        thing_map: list[bool],
        scoring: SoftmaxScoring,
    ) -> None:
        """segm AP of one image: logits [Q, K], masks [Q, h, w] -> its best thing queries'
        masks at the original size, against the ground truth's thing segments."""
        scores, labels = scoring.probabilities(logits).max(-1)
        query = torch.tensor(thing_map, device=labels.device)[labels].nonzero()[:, 0]
        query = query[scores[query].argsort(descending=True)[: self.segm_top_k]]
        size = tuple(gt["ids"].shape)
        device = self.segm.device
        pred_masks = torch.zeros(0, *size, dtype=torch.bool)
        if len(query):
            pred_masks = self.segm_postprocess(
                [{}], {"pred_masks": masks[query][None]}, target["orig_size"][None],
                target["size"][None], canvas_size=pixel_values.shape[-2:],
            )[0]["masks"][:, 0].bool()  # fmt: skip
        pred = {
            "masks": pred_masks.to(device),
            "scores": scores[query].float().to(device),
            "labels": torch.tensor(ids, device=device)[labels[query].to(device)],
        }
        things = [s for s in gt["segments_info"] if s["isthing"]]
        gt_masks = torch.zeros(0, *size, dtype=torch.bool)
        if things:
            gt_masks = torch.stack([gt["ids"] == s["id"] for s in things])
        truth = {
            "masks": gt_masks.to(device),
            "labels": torch.tensor([s["category_id"] for s in things], device=device).long(),
            "iscrowd": torch.tensor([s.get("iscrowd", 0) for s in things], device=device).long(),
            "image_id": target["image_id"],
        }  # fmt: skip
        if all("area" in s for s in things):
            truth["area"] = torch.tensor([float(s["area"]) for s in things], device=device)
        self.segm.update([pred], [truth])

    def compute(self) -> dict[str, float]:
        """:data:`~detr_lightning.evaluation.panoptic.PQ_KEYS` and ``segm_AP``, ``segm_AP50``, ... (CocoBoxAP's names prefixed);
        empty when nothing was updated (e.g. a detector without a mask head). Resets; keeps
        the PQ of each category in :attr:`per_class` (empty when nothing was updated)."""
        if not self.updated:
            self.per_class = {}
            return {}
        values = dict(self.pq.compute())
        self.per_class = dict(self.pq.per_class)
        if self.segm is not None:
            values.update({f"segm_{k}": float(v) for k, v in self.segm.compute().items()})
        self.reset()
        return values

    def reset(self) -> None:
        self.pq.reset()
        if self.segm is not None:
            self.segm.reset()
        self.updated = False


def format_pq_table(metrics: Mapping[str, float], title: str = "Panoptic quality") -> str:
    """panopticapi's summary layout (x100) for the :data:`~detr_lightning.evaluation.panoptic.PQ_KEYS` present; "" when absent."""
    if "PQ" not in metrics:
        return ""
    lines = [title, f"{'':10}|{'PQ':>7}{'SQ':>7}{'RQ':>7}", "-" * 31]
    for suffix, name in PQ_GROUPS:
        row = [100 * float(metrics.get(f"{k}{suffix}", float("nan"))) for k in ("PQ", "SQ", "RQ")]
        lines.append(f"{name:10}|" + "".join(f"{v:7.1f}" for v in row))
    return "\n".join(lines)
