"""DETR's set criterion: matched classification and box losses, plus aux-layer copies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_or_default
from detr_lightning.detr.criterion_args import base_loss_name, check_criterion_args
from detr_lightning.detr.extra_terms import call_extra_term
from detr_lightning.detr.loss_terms import box_losses, cardinality_error, class_error
from detr_lightning.detr.mask_losses import mask_losses
from detr_lightning.detr.matched_pairs import MatchedPairs
from detr_lightning.detr.matcher import HungarianMatcher, MatchIndices

DEFAULT_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
# Which weighted loss keys each entry of `losses` produces (logged-only keys are not listed).
LOSS_KEYS = {
    "labels": ("loss_ce",),
    "boxes": ("loss_bbox", "loss_giou"),
    "cardinality": (),
    "masks": ("loss_mask", "loss_dice"),
}


class SetCriterion(nn.Module):
    """Losses of DETR given a Hungarian matching between predictions and targets.

    `losses` picks the loss groups: "labels" -> loss_ce (+ logged class_error), "boxes" ->
    loss_bbox and loss_giou, "cardinality" -> logged cardinality_error, "masks" -> loss_mask
    (sigmoid focal) and loss_dice on the matched ``pred_masks`` of the last decoder layer only
    (aux layers have no masks, as official; targets need ``masks``). Every returned loss is
    unweighted; `weighted_total` applies `weight_dict`, and only keys named there enter the total.
    The paper's loss ablation is therefore a weight_dict: {"loss_ce": 1, "loss_bbox": 5} (class +
    L1) or {"loss_ce": 1, "loss_giou": 2} (class + GIoU); the missing box loss is still returned
    for logging but gets no gradient. The matcher's costs are independent of this choice.

    ``scoring`` (the matcher's too) says what the logits mean and gives ``loss_ce``: the paper's
    softmax cross-entropy over the classes and "no object", weighted by ``eos_coef``
    (:class:`~detr_lightning.detr.class_scoring.SoftmaxScoring`, None), or an extension's (the
    sigmoid focal loss of :mod:`~detr_lightning.convergence.focal_scoring`, whose logits have no
    "no object" column, so ``eos_coef`` must then be left unset). Extensions with extra query
    sets (denoising, query groups, dense proposals) reuse :meth:`set_losses`.
    Subclasses adding loss groups extend `LOSS_KEYS`.

    ``extra_terms`` ({name: module}) adds losses of the matched pairs without a subclass: each
    module has ``keys`` (the loss names it returns) and is called as ``term(layers, targets,
    pairs, num_boxes)`` with the L stacked prediction sets of :meth:`layer_losses`, their
    :class:`~detr_lightning.detr.matched_pairs.MatchedPairs` and the normaliser, returning
    {name: [L] tensor}. Like the paper's losses it applies to every query set (aux layers
    ``_i``; an extension's ``_dn``, ``_enc``, ``_g<k>``) and is weighted by ``weight_dict``
    (example: :class:`~detr_lightning.convergence.aspect_loss.AspectRatioLoss`).
    """

    LOSS_KEYS: Mapping[str, tuple[str, ...]] = LOSS_KEYS

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        eos_coef: float | None = None,
        losses: Sequence[str] = ("labels", "boxes", "cardinality"),
        weight_dict: Mapping[str, float] | None = None,
        scoring: SoftmaxScoring | None = None,
        extra_terms: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.extra_terms = nn.ModuleDict(dict(extra_terms or {}))
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        scoring = scoring_or_default(scoring)
        check_criterion_args(self.LOSS_KEYS, losses, self.weight_dict, self.extra_terms, scoring,
                             getattr(matcher, "scoring", scoring), num_classes, eos_coef)  # fmt: skip
        eos_coef = 0.1 if eos_coef is None else eos_coef
        self.num_classes = num_classes
        self.matcher = matcher
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.scoring = scoring
        weight = torch.ones(num_classes + 1)
        weight[-1] = eos_coef
        self.register_buffer("empty_weight", weight, persistent=False)

    def forward(
        self,
        outputs: dict,
        targets: list[dict[str, Tensor]],
        num_boxes: float | Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Match and compute every loss, for the final layer and each aux output.

        Args:
            outputs: "pred_logits" [B, Q, K] (K = C+1, or C for a sigmoid scoring),
                "pred_boxes" [B, Q, 4] normalised cxcywh, optional "aux_outputs": list of dicts
                with the same two keys.
            targets: B dicts with "labels" [T_b] int64 and "boxes" [T_b, 4] normalised cxcywh
                (with the "masks" loss also "masks" [T_b, H, W] bool on the padded canvas).
            num_boxes: box count to normalise by (e.g. averaged over DDP processes); None counts
                the boxes of `targets`. Clamped to >= 1.
        Returns:
            unweighted scalar losses loss_ce, loss_bbox, loss_giou, logged-only class_error (%)
            and cardinality_error, and loss_<name>_<i> and cardinality_error_<i> for aux output i.
        """
        expected = self.scoring.num_logits(self.num_classes)
        if outputs["pred_logits"].shape[-1] != expected:
            raise ValueError(
                f"SetCriterion: pred_logits has {outputs['pred_logits'].shape[-1]} columns but "
                f"num_classes={self.num_classes} under {self.scoring} needs {expected}; make the "
                "model's and the criterion's num_classes (and scoring) agree."
            )
        if "masks" in self.losses and "pred_masks" not in outputs:
            raise ValueError(
                "SetCriterion: losses include 'masks' but the outputs have no 'pred_masks'; "
                "wrap the detector in DETRsegm or drop 'masks' from losses."
            )
        if "masks" in self.losses and not all("masks" in t for t in targets):
            raise ValueError(
                "SetCriterion: losses include 'masks' but a target has no 'masks' [T, H, W]; "
                "use a panoptic dataset or drop 'masks' from losses."
            )
        num_boxes = self.normalise_num_boxes(targets, num_boxes, outputs["pred_boxes"].device)
        return self.set_losses(outputs, targets, num_boxes)

    def set_losses(
        self,
        outputs: dict,
        targets: list[dict[str, Tensor]],
        num_boxes: Tensor,
        suffix: str = "",
        indices: MatchIndices | None = None,
    ) -> dict[str, Tensor]:
        """Losses of one query set and its aux outputs, keys suffixed ``suffix`` (then ``_i``).
        ``indices`` given = a known assignment, reused for every layer; None = match each layer.
        Logged-only metrics come with the unsuffixed main set only: class_error for the last
        layer, cardinality_error for every layer (``cardinality_error_i``, as the official)."""

        layers = [outputs, *outputs.get("aux_outputs", [])]
        matches = [indices] * len(layers) if indices is not None else self.match(layers, targets)
        per_layer = self.layer_losses(layers, targets, matches, num_boxes, log=not suffix)
        result: dict[str, Tensor] = {}
        for i, losses in enumerate(per_layer):
            tail = suffix if i == 0 else f"{suffix}_{i - 1}"
            result.update({f"{k}{tail}": v for k, v in losses.items()})
        return result

    def match(self, layers: Sequence[dict], targets: list[dict[str, Tensor]]) -> list[MatchIndices]:
        """The matcher's assignment for each prediction set of ``layers`` (e.g. every decoder
        layer); a matcher with ``match_layers`` (:class:`HungarianMatcher`) does them all with
        one device->host round trip."""
        batched = getattr(self.matcher, "match_layers", None)
        if batched is not None:
            return batched(layers, targets)
        return [self.matcher(out, targets) for out in layers]

    @staticmethod
    def normalise_num_boxes(
        targets: list[dict[str, Tensor]], num_boxes: float | Tensor | None, device: torch.device
    ) -> Tensor:
        """Float scalar tensor: `num_boxes`, or the targets' box count when None; clamped >= 1."""
        if num_boxes is None:
            num_boxes = sum(len(t["labels"]) for t in targets)
        return torch.as_tensor(num_boxes, dtype=torch.float, device=device).clamp(min=1)

    def weight_of(self, key: str) -> float | None:
        """Weight of a loss key: an exact weight_dict entry (official-style "loss_ce_0"), else
        that of its base name; None for keys that are only logged."""
        return self.weight_dict.get(key, self.weight_dict.get(base_loss_name(key)))

    def weighted_total(self, loss_dict: Mapping[str, Tensor]) -> Tensor:
        """Scalar sum of weight_of(k) * v over the keys of `loss_dict` that have a weight."""
        terms = [w * v for k, v in loss_dict.items() if (w := self.weight_of(k)) is not None]
        if not terms:
            raise ValueError(
                f"SetCriterion.weighted_total: none of {sorted(loss_dict)} has a weight in "
                f"weight_dict {self.weight_dict}; nothing to optimise."
            )
        return torch.stack(terms).sum()

    def layer_losses(
        self,
        layers: Sequence[dict],
        targets: list[dict[str, Tensor]],
        matches: Sequence[MatchIndices],
        num_boxes: Tensor,
        log: bool = True,
    ) -> list[dict[str, Tensor]]:
        """Unsuffixed losses of L prediction sets of the same queries (decoder layers) under
        the given matchings, computed for all sets in one pass (one gather and one loss call
        per tensor, not per set and image: the eager GPU step is launch-bound). Reusable with
        known indices (denoising queries, per-group matching).

        Args:
            layers: L dicts with "pred_logits" [B, Q, K] and "pred_boxes" [B, Q, 4] (cxcywh);
                the masks loss reads "pred_masks" of ``layers[0]`` only, as official.
            matches: per set, the :data:`MatchIndices` of its B images.
            log: add the logged metrics: class_error (set 0) and cardinality_error (every set).
        Returns:
            L dicts of scalar losses.
        """
        device = layers[0]["pred_boxes"].device
        pairs = MatchedPairs.of(list(matches), [len(t["labels"]) for t in targets], device)
        per_set: dict[str, Tensor] = {}  # name -> [L]
        first: dict[str, Tensor] = {}  # set 0 only
        logits = torch.stack([out["pred_logits"] for out in layers])
        matched_boxes = None
        if "boxes" in self.losses:
            boxes = torch.stack([out["pred_boxes"] for out in layers])
            src = boxes[pairs.layer, pairs.batch, pairs.query]
            tgt = torch.cat([t["boxes"] for t in targets])[pairs.target]
            matched_boxes = (src, tgt)
            per_set.update(box_losses(src, tgt, pairs.sizes, num_boxes))
        for name, term in self.extra_terms.items():
            per_set.update(call_extra_term(name, term, layers, targets, pairs, num_boxes))
        if "labels" in self.losses:
            labels = torch.cat([t["labels"] for t in targets])[pairs.target]
            per_set["loss_ce"] = self.scoring.loss(
                logits, pairs, labels, num_boxes, self.empty_weight, matched_boxes
            )
            if log:
                first["class_error"] = class_error(
                    logits[0][pairs.first_set()], labels[: pairs.sizes[0]]
                )
        if "masks" in self.losses and "pred_masks" in layers[0]:
            tgt_masks = [t["masks"][j] for t, (_, j) in zip(targets, matches[0], strict=True)]
            first.update(
                mask_losses(layers[0]["pred_masks"], pairs.first_set(), tgt_masks, num_boxes)
            )
        if "cardinality" in self.losses and log:
            is_object = self.scoring.is_object(logits)
            per_set["cardinality_error"] = cardinality_error(is_object, targets)
        result = [{k: v[i] for k, v in per_set.items()} for i in range(len(layers))]
        result[0].update(first)
        return result
