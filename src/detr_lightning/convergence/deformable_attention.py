"""Box-relative deformable cross-attention (Deformable DETR, Zhu et al. 2021, one scale): each
query reads the memory at a few learned points placed relative to its reference box.

Why: plain cross-attention returns a weighted mean of values that carry no position, so a query
learns where an object's edges lie relative to its box only through the attention pattern of
its positional query, which a few epochs do not teach: the refinement heads of the shapes preset
did not lower the denoising box loss, not even on one batch (docs/convergence.md). Here head h's
point k of a query with reference box (cx, cy, w, h) sits at ``(cx, cy) + o_hk * (w, h) / (2 P)``
with the offsets ``o`` and the points' softmax weights predicted from the query, so what a head
reads is tied to a place in the box: its edges, its surroundings. The offsets start on a
star (head h looks along direction 2 pi h / H, point k at (k + 1) / P of the half-box), so a
fresh layer already reads the box's edges.

With ``levels`` (Deformable DETR's multi-scale form) a query also reads earlier backbone stages,
e.g. the compact trunk's stride-4 ``c4``: each level has its own points (the same box-relative
placement) and value projection, and one softmax spans the points of all levels, so a head
weighs fine detail against the memory. Why: an object of 8-16 px covers one or two cells of
the stride-8 memory, whose stage has already pooled its edges and shape.

The module takes ``nn.MultiheadAttention``'s call so it replaces a decoder layer's
``multihead_attn``; the reference boxes, the feature map's padding mask and the extra levels
come from :meth:`BoxDeformableAttention.bound`, which the model enters around its decoder pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr_lightning.convergence.dims import ModelDims
from detr_lightning.convergence.sampling_map import onto_padded_map, sampling_weight_map


class BoxDeformableAttention(nn.Module):
    """Deformable cross-attention around reference boxes (module docstring).

    Args:
        dims: the model's sizes (``d_model``, ``nhead``, ``backbone_stages``).
        num_points: sampling points per head, query and level.
        levels: backbone stages read besides the memory (names from ``dims.backbone_stages``,
            e.g. ``[c4]``; the backbone must return them: ``return_interm_layers``).
    """

    def __init__(self, dims: ModelDims, num_points: int = 4, levels: Sequence[str] = ()) -> None:
        super().__init__()
        d, heads = dims.d_model, dims.nhead
        if d % heads:
            raise ValueError(f"BoxDeformableAttention: d_model {d} is not divisible by {heads}")
        if num_points < 1:
            raise ValueError(
                f"BoxDeformableAttention: num_points={num_points} must be >= 1 "
                "(model.net.cross_attention.num_points)"
            )
        missing = [name for name in levels if name not in dims.backbone_stages]
        if missing:
            raise ValueError(
                f"model.net.cross_attention.levels names {missing}, which the backbone does not "
                f"return (it returns {list(dims.backbone_stages)}): set "
                "model.net.backbone.return_interm_layers=true, or name returned stages."
            )
        self.heads, self.points, self.levels = heads, num_points, tuple(levels)
        samples = heads * (1 + len(self.levels)) * num_points  # per query
        self.sampling_offsets = nn.Linear(d, samples * 2)
        self.attention_weights = nn.Linear(d, samples)
        self.value_proj = nn.Linear(d, d)
        self.level_proj = nn.ModuleList(nn.Linear(dims.backbone_stages[n], d) for n in levels)
        self.output_proj = nn.Linear(d, d)
        self._reference: Callable[[], Tensor] | None = None
        self._mask: Tensor | None = None
        self._stages: Mapping[str, tuple[Tensor, Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.heads) * (2 * math.pi / self.heads)
        star = torch.stack([angle.cos(), angle.sin()], -1)
        star = star / star.abs().max(-1, keepdim=True).values  # onto the box's border
        steps = torch.arange(1, self.points + 1, dtype=star.dtype)
        per_level = star[:, None, None] * steps[None, None, :, None]  # [H, 1, P, 2]
        with torch.no_grad():  # every level starts on the same star
            self.sampling_offsets.bias.copy_(
                per_level.expand(-1, self._num_levels, -1, -1).flatten()
            )
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for layer in (self.value_proj, self.output_proj, *self.level_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def _num_levels(self) -> int:
        return 1 + len(self.levels)

    @contextmanager
    def bound(
        self,
        reference: Callable[[], Tensor],
        mask: Tensor,
        stages: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    ) -> Iterator[None]:
        """Inside, calls read ``reference()`` ([B, Q, 4] normalised cxcywh, the current layer's
        boxes), the memory's map mask [B, h, w] (True = real) and, for ``levels``, ``stages``:
        {name: (features [B, C, h_l, w_l], mask [B, h_l, w_l] True = real)}."""
        absent = [name for name in self.levels if name not in (stages or {})]
        if absent:
            raise ValueError(f"BoxDeformableAttention reads the levels {absent}: bind their maps")
        self._reference, self._mask, self._stages = reference, mask, stages or {}
        try:
            yield
        finally:
            self._reference, self._mask, self._stages = None, None, {}

    def sample_locations(self, query: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """query [B, Q, d], boxes [B, Q, 4] cxcywh -> locations [B, Q, H, L*P, 2] (x, y relative
        to each image's extent; level-major: the memory's P points, then each level's) and
        weights [B, Q, H, L*P] (softmax over all of a head's points)."""
        b, q, _ = query.shape
        samples = self._num_levels * self.points
        offsets = self.sampling_offsets(query).view(b, q, self.heads, samples, 2)
        half = boxes[:, :, None, None, 2:] / (2 * self.points)
        locations = boxes[:, :, None, None, :2] + offsets * half
        weights = self.attention_weights(query).view(b, q, self.heads, samples).softmax(-1)
        return locations, weights

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """``nn.MultiheadAttention``'s call (batch first): query [B, Q, d] (content + positional
        query), value [B, S = h*w, d] the memory, key_padding_mask [B, S] True = padding.
        ``key`` is unused: where to read comes from the reference boxes, not from a dot product.
        The ``levels`` are read from the stages given to :meth:`bound`.

        Returns:
            [B, Q, d], and with ``need_weights`` the attention over the map that the sampling
            amounts to, [B, Q, S] averaged over heads (each point's bilinear weights times its
            softmax weight), as ``AttentionCapture`` reads it.
        """
        if self._reference is None or self._mask is None:
            raise RuntimeError(
                "BoxDeformableAttention needs its reference boxes: call it inside "
                "``with module.bound(reference, mask[, stages])`` (ConvergenceDETR does)"
            )
        if attn_mask is not None:
            raise ValueError(
                "BoxDeformableAttention takes no attention bias: model.net.attention_prior and "
                "model.net.cross_attention exclude each other"
            )
        mask, b, d = self._mask, query.shape[0], query.shape[-1]
        h, w = mask.shape[-2:]
        if value.shape[1] != h * w:
            raise ValueError(
                f"BoxDeformableAttention reads one map: the memory has {value.shape[1]} tokens, "
                f"the bound mask's map {h}x{w} = {h * w}"
            )
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        locations, weights = self.sample_locations(query, self._reference())
        where = locations.chunk(self._num_levels, dim=3)  # the memory's points, then each level's
        share = weights.chunk(self._num_levels, dim=3)
        out = self._read_memory(value.view(b, h, w, d), mask, where[0], share[0])
        for name, proj, level_where, level_share in zip(
            self.levels, self.level_proj, where[1:], share[1:], strict=True
        ):
            out = out + self._read_level(*self._stages[name], proj, level_where, level_share)
        out = self.output_proj(out.flatten(2))
        if not need_weights:
            return out, None
        return out, sampling_weight_map(onto_padded_map(locations, mask), weights, h, w)

    def _read_memory(
        self, memory: Tensor, mask: Tensor, locations: Tensor, weights: Tensor
    ) -> Tensor:
        """memory [B, h, w, d], mask [B, h, w] True = real, locations [B, Q, H, P, 2], weights
        [B, Q, H, P] -> [B, Q, H, d/H]: each head's weighted reads of its projected values."""
        b, h, w, d = memory.shape
        value = self.value_proj(memory).view(b, h, w, self.heads, d // self.heads)
        value = value.permute(0, 3, 4, 1, 2).flatten(0, 1)  # [B*H, d/H, h, w]
        grid = 2 * onto_padded_map(locations, mask) - 1  # grid_sample's [-1, 1]
        sampled = _sample(value, grid.transpose(1, 2).flatten(0, 1))
        out = (sampled * weights.transpose(1, 2).flatten(0, 1)[:, None]).sum(-1)
        return out.view(b, self.heads, d // self.heads, -1).permute(0, 3, 1, 2)

    def _read_level(
        self, features: Tensor, mask: Tensor, proj: nn.Linear, locations: Tensor, weights: Tensor
    ) -> Tensor:
        """features [B, C, h, w] (an earlier backbone stage), mask [B, h, w] True = real,
        locations [B, Q, H, P, 2], weights [B, Q, H, P] -> [B, Q, H, d/H]: each head's
        weighted reads, projected to the head's value channels.

        Projects after sampling: bilinear reads and the linear projection commute, so the
        C-channel map is read as it is and only B*Q*H reads are projected, not every pixel
        (the stride-4 map has 4x the memory's pixels). The bias enters with the level's share
        of the softmax weights, as a projected map would give it inside the image.
        """
        b, c = features.shape[:2]
        q, heads, points = weights.shape[1:]
        features = features.masked_fill(~mask[:, None], 0.0)
        grid = 2 * onto_padded_map(locations, mask) - 1  # grid_sample's [-1, 1]
        sampled = _sample(features, grid.flatten(2, 3))
        mixed = torch.einsum("bcqhp,bqhp->bqhc", sampled.view(b, c, q, heads, points), weights)
        weight = proj.weight.view(heads, -1, c)  # head h's rows of the value channels
        bias = proj.bias.view(heads, -1) * weights.sum(-1, keepdim=True)
        return torch.einsum("bqhc,hdc->bqhd", mixed, weight) + bias


def _sample(values: Tensor, grid: Tensor) -> Tensor:
    """``F.grid_sample(values, grid)`` (bilinear, align_corners=False) in float32, returned in
    ``values``' dtype. In bf16 / fp16 inference the grid would otherwise need the values' dtype
    (grid_sample takes one), and bf16 keeps 8 significant bits: a coordinate near 1 moves in
    steps of 2^-7 of the map, most of a pixel on the stride-4 stage, and the bilinear weights
    would be rounded as well. Reading the (exactly upcast) values at float32 positions keeps
    the sub-pixel reads; only the result is rounded once. Float32 models are unchanged."""
    sampled = F.grid_sample(values.float(), grid.float(), align_corners=False)
    return sampled.to(values.dtype)
