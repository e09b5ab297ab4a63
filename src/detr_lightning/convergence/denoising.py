"""Training-only extra decoder queries: denoising queries (DN-DETR) and query groups (Group DETR).

Both levers append queries to the decoder during training only and hide them behind a
self-attention mask, so inference (and every output the model returns there) is unchanged.

Decoder query layout during training, along the query axis::

    [ dn group 0 | dn group 1 | ... | dn group G-1 | matching group 0 | ... | matching group K-1 ]
      each dn group holds ``pad`` = the largest target count in the batch;
      each matching group holds ``num_queries``.

Visibility rules (DN-DETR Sec. 3.4, Group DETR Sec. 3): matching queries never see denoising
queries (otherwise they would copy the ground truth), denoising groups never see each other, and
matching groups never see each other. Denoising queries may look at matching group 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detr_lightning.convergence.dims import ModelDims


@dataclass
class DenoisingQueries:
    """Noised ground truth turned into decoder queries for one batch.

    Attributes:
        labels: [B, G*pad] int64 noised class labels (0 on padding slots).
        boxes: [B, G*pad, 4] noised boxes, normalised cxcywh inside [0, 1].
        valid: [B, G*pad] bool, True where a slot holds a real target (False = padding).
        target_index: [B, G*pad] int64, index of the reconstructed target in that image's
            ``targets[b]`` (0 on padding slots).
        num_groups: G, the number of noised copies of every target.
        pad: slots per group (the largest target count in the batch).
    """

    labels: Tensor
    boxes: Tensor
    valid: Tensor
    target_index: Tensor
    num_groups: int
    pad: int

    @property
    def num_queries(self) -> int:
        return self.num_groups * self.pad

    def matching_indices(self) -> list[tuple[Tensor, Tensor]]:
        """Known assignment of denoising queries to targets, one ``(query_idx, target_idx)`` pair
        per image, in the same format as ``HungarianMatcher`` returns (query indices ascending)."""
        pairs = []
        for valid, index in zip(self.valid, self.target_index, strict=True):
            query_idx = valid.nonzero(as_tuple=True)[0]
            pairs.append((query_idx, index[query_idx]))
        return pairs


def zero_tie(*modules: nn.Module | None) -> Tensor:
    """Scalar 0 that depends on every parameter of ``modules`` (None skipped): added to an
    output, it gives them a zero gradient where they were not used, as DDP needs."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    total = params[0].sum()  # on the parameters' device and dtype
    for p in params[1:]:
        total = total + p.sum()
    return total * 0.0


@torch.compiler.disable
def make_denoising_queries(
    targets: list[dict[str, Tensor]],
    num_classes: int,
    num_groups: int = 5,
    label_noise: float = 0.2,
    box_noise: float = 0.4,
    generator: torch.Generator | None = None,
) -> DenoisingQueries | None:
    """Build ``num_groups`` noised copies of every ground-truth object.

    Args:
        targets: per image, ``labels`` [T] int64 and ``boxes`` [T, 4] normalised cxcywh.
        num_classes: labels are redrawn uniformly from ``[0, num_classes)`` when flipped.
        label_noise: probability of replacing a label by a random class.
        box_noise: DN-DETR's lambda: centres move by up to ``box_noise * size / 2`` and sides
            are scaled by a factor in ``[1 - box_noise, 1 + box_noise]``.
    Returns:
        ``None`` when the batch has no targets at all (there is nothing to denoise).
    """
    counts = [len(t["labels"]) for t in targets]
    pad = max(counts, default=0)
    if pad == 0 or num_groups <= 0:
        return None
    device = targets[0]["boxes"].device
    batch = len(targets)
    slots = num_groups * pad
    labels = torch.zeros(batch, slots, dtype=torch.int64, device=device)
    boxes = torch.zeros(batch, slots, 4, device=device)
    boxes[..., :2] = 0.5
    boxes[..., 2:] = 0.1
    valid = torch.zeros(batch, slots, dtype=torch.bool, device=device)
    target_index = torch.zeros(batch, slots, dtype=torch.int64, device=device)
    for b, (target, count) in enumerate(zip(targets, counts, strict=True)):
        if count == 0:
            continue
        slot = (
            torch.arange(num_groups, device=device)[:, None] * pad
            + torch.arange(count, device=device)
        ).flatten()
        index = torch.arange(count, device=device).repeat(num_groups)
        labels[b, slot] = target["labels"][index]
        boxes[b, slot] = target["boxes"][index].to(boxes.dtype)
        valid[b, slot] = True
        target_index[b, slot] = index

    flip = torch.rand(labels.shape, generator=generator, device=device) < label_noise
    random_labels = torch.randint(0, num_classes, labels.shape, generator=generator, device=device)
    labels = torch.where(flip & valid, random_labels, labels)

    if box_noise > 0:
        uniform = torch.rand(boxes.shape, generator=generator, device=device) * 2 - 1
        size = boxes[..., 2:]
        centre = boxes[..., :2] + uniform[..., :2] * size / 2 * box_noise
        size = size * (1 + uniform[..., 2:] * box_noise)
        boxes = torch.cat([centre, size], dim=-1)
    # A box must stay a valid normalised box; keep a minimum side so inverse-sigmoid stays finite.
    boxes = torch.cat([boxes[..., :2].clamp(0.0, 1.0), boxes[..., 2:].clamp(1e-3, 1.0)], dim=-1)
    return DenoisingQueries(labels, boxes, valid, target_index, num_groups, pad)


def query_attention_mask(
    num_queries: int,
    num_query_groups: int = 1,
    dn_groups: int = 0,
    dn_pad: int = 0,
    device: torch.device | None = None,
) -> Tensor | None:
    """Decoder self-attention mask for the layout in the module docstring.

    Returns:
        [N, N] bool with ``N = dn_groups * dn_pad + num_query_groups * num_queries``;
        True means "may NOT attend" (``nn.MultiheadAttention``'s boolean ``attn_mask``).
        ``None`` when there are no extra queries (plain DETR: everyone sees everyone).
    """
    num_dn = dn_groups * dn_pad
    total = num_dn + num_query_groups * num_queries
    if total == num_queries:
        return None
    group_of = torch.empty(total, dtype=torch.int64, device=device)
    # Each dn group and each matching group gets its own id; a query sees its own group only.
    if num_dn:
        group_of[:num_dn] = torch.arange(dn_groups, device=device).repeat_interleave(dn_pad)
    group_of[num_dn:] = dn_groups + torch.arange(num_query_groups, device=device).repeat_interleave(
        num_queries
    )
    blocked = group_of[:, None] != group_of[None, :]
    # Denoising queries may read the first matching group (DN-DETR lets dn see matching queries).
    blocked[:num_dn, num_dn : num_dn + num_queries] = False
    return blocked


class Denoiser(nn.Module):
    """DN-DETR as a component: noised copies of the ground truth become extra training queries.

    Built by the model as ``denoiser(dims)``; owns the label embedding that
    turns a noised label into a query's content. The model gives the noised boxes their
    positional queries (through its ``ref_point_head``) and hides them behind
    :func:`query_attention_mask`.

    Args:
        dims: the model's sizes (``d_model``, ``num_classes``).
        groups: noised copies of every target (DN-DETR's dn groups), >= 1.
        label_noise: probability of replacing a label by a random class.
        box_noise: DN-DETR's lambda (see :func:`make_denoising_queries`).
    """

    def __init__(
        self,
        dims: ModelDims,
        groups: int = 5,
        label_noise: float = 0.2,
        box_noise: float = 0.4,
    ) -> None:
        super().__init__()
        if groups < 1 or not 0 <= label_noise <= 1 or box_noise < 0:
            raise ValueError(
                f"model.net.denoiser: groups={groups}, label_noise={label_noise}, "
                f"box_noise={box_noise}; need groups >= 1, label_noise in [0, 1], box_noise >= 0 "
                "(remove the denoiser node to switch denoising off)."
            )
        self.num_classes, self.groups = dims.num_classes, groups
        self.label_noise, self.box_noise = label_noise, box_noise
        self.label_embed = nn.Embedding(dims.num_classes, dims.d_model)

    def forward(self, targets: list[dict[str, Tensor]] | None) -> DenoisingQueries | None:
        """Noised queries for a training batch (None at inference or without targets)."""
        if not self.training or targets is None:
            return None
        return make_denoising_queries(
            targets, self.num_classes, self.groups, self.label_noise, self.box_noise
        )
