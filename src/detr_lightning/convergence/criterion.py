"""The set criterion for ConvergenceDETR's extra training outputs.

On top of the paper's losses (:class:`~detr_lightning.detr.criterion.SetCriterion`):

* every extra query group (``group_outputs``, Group DETR) is matched one-to-one on its own;
  losses suffixed ``_g1``, ``_g2`` ...;
* denoising queries (``dn_outputs``, DN-DETR) have a known assignment; each target appears
  once per dn group, hence a normaliser of ``num_boxes * groups``; suffix ``_dn``;
* the dense proposal head (``enc_outputs``) is matched one-to-many: by ``encoder_matcher``
  (e.g. :class:`~detr_lightning.convergence.center_matcher.CenterMatcher`, losses normalised by
  the positive tokens of this process) or, without one, by repeating every target
  ``encoder_matches`` times before Hungarian matching (H-DETR), normalised by
  ``encoder_matches * num_boxes``; suffix ``_enc``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.matcher import HungarianMatcher


class ConvergenceCriterion(SetCriterion):
    """:class:`SetCriterion` plus the group, denoising and dense-proposal losses.

    Args (``kwargs`` are :class:`SetCriterion`'s):
        encoder_matcher: assignment of the dense proposals (tokens) to targets, or None for the
            Hungarian one-to-many matching.
        encoder_matches: k of that Hungarian one-to-many matching (only without
            ``encoder_matcher``).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        encoder_matcher: nn.Module | None = None,
        encoder_matches: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, matcher, **kwargs)
        if encoder_matches < 1:
            raise ValueError(f"model.criterion.encoder_matches={encoder_matches}: need >= 1.")
        if encoder_matcher is not None and encoder_matches != 1:
            raise ValueError(
                "model.criterion.encoder_matches applies to the Hungarian one-to-many matching "
                "only; with model.criterion.encoder_matcher set, remove encoder_matches."
            )
        self.encoder_matcher = encoder_matcher
        self.encoder_matches = encoder_matches

    def forward(
        self,
        outputs: dict,
        targets: list[dict[str, Tensor]],
        num_boxes: float | Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The paper's losses plus ``_g<i>``, ``_dn`` and ``_enc`` ones (shapes as in
        :meth:`SetCriterion.forward`; see the module docstring for the extra outputs)."""
        result = super().forward(outputs, targets, num_boxes)
        num_boxes = self.normalise_num_boxes(targets, num_boxes, outputs["pred_boxes"].device)
        for g, group in enumerate(outputs.get("group_outputs", ()), start=1):
            result.update(self.set_losses(group, targets, num_boxes, suffix=f"_g{g}"))
        dn = outputs.get("dn_queries")
        if dn is not None:
            known = dn.matching_indices()
            result.update(
                self.set_losses(
                    outputs["dn_outputs"], targets, num_boxes * dn.num_groups, "_dn", known
                )
            )
        enc = outputs.get("enc_outputs")
        if enc is not None and self.encoder_matcher is not None:
            known = self.encoder_matcher(enc, targets)
            positives = self.normalise_num_boxes(
                targets, sum(len(src) for src, _ in known), enc["pred_boxes"].device
            )
            result.update(self.set_losses(enc, targets, positives, "_enc", known))
        elif enc is not None:
            k = self.encoder_matches
            repeated = [{"labels": t["labels"].repeat(k), "boxes": t["boxes"].repeat(k, 1)}
                        for t in targets]  # fmt: skip
            result.update(self.set_losses(enc, repeated, num_boxes * k, "_enc"))
        return result
