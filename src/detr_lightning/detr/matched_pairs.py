"""The matched (prediction, target) pairs of several prediction sets, flattened for one pass.

The criterion scores every decoder layer against the same targets. Gathering each layer's and
each image's matches on its own costs a handful of small ops per (layer, image): on a GPU that
is hundreds of kernel launches per step, and the eager step is launch-bound. Flattened once,
the pairs index the stacked [L, B, Q, ...] predictions in one gather per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detr_lightning.detr.matcher import MatchIndices


@dataclass(frozen=True)
class MatchedPairs:
    """Matched pairs of L prediction sets, layer-major (all of set 0's pairs first).

    Attributes:
        layer, batch, query: [M] int64 indices into stacked predictions [L, B, Q, ...].
        target: [M] int64 index into the batch's targets concatenated image after image.
        sizes: pairs per prediction set (a host list, length L).
    """

    layer: Tensor
    batch: Tensor
    query: Tensor
    target: Tensor
    sizes: list[int]

    @classmethod
    def of(
        cls, matches: list[MatchIndices], target_counts: list[int], device: torch.device
    ) -> MatchedPairs:
        """Flatten ``matches`` (per set, per image: (query_idx [K], target_idx [K]) as
        :class:`~detr_lightning.detr.matcher.HungarianMatcher` returns them) for images holding
        ``target_counts`` targets. The (layer, image, target offset) of every pair is built on
        the host from the index lengths alone, so nothing waits for the device."""
        num_sets, num_images = len(matches), len(target_counts)
        pairs = [pair for per_image in matches for pair in per_image]
        if len(pairs) != num_sets * num_images:
            raise ValueError(
                f"MatchedPairs: expected {num_images} (query_idx, target_idx) pairs per "
                f"prediction set for {num_images} images, got {[len(m) for m in matches]}."
            )
        counts = [len(src) for src, _ in pairs]
        sizes = [sum(counts[i * num_images : (i + 1) * num_images]) for i in range(num_sets)]
        if not pairs or not sum(counts):
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return cls(empty, empty, empty, empty, sizes)
        offsets = torch.tensor([0, *target_counts[:-1]]).cumsum(0)
        owner = torch.stack(
            [
                torch.arange(num_sets).repeat_interleave(num_images),
                torch.arange(num_images).repeat(num_sets),
                offsets.repeat(num_sets),
            ]
        ).repeat_interleave(torch.tensor(counts), dim=1, output_size=sum(counts))
        layer, batch, offset = owner.to(device, non_blocking=True)
        query = torch.cat([src for src, _ in pairs])
        target = torch.cat([tgt for _, tgt in pairs]) + offset
        return cls(layer, batch, query, target, sizes)

    def first_set(self) -> tuple[Tensor, Tensor]:
        """(batch [M_0], query [M_0]) of set 0's pairs (views)."""
        return self.batch[: self.sizes[0]], self.query[: self.sizes[0]]


def sum_per_set(values: Tensor, sizes: list[int]) -> Tensor:
    """values [M, ...] layer-major as :class:`MatchedPairs` -> [L, ...] sums per set."""
    if len(set(sizes)) == 1:  # every set matched every target: one reshape, one sum
        return values.reshape(len(sizes), sizes[0], *values.shape[1:]).sum(1)
    return torch.stack([part.sum(0) for part in values.split(sizes)])
