"""DETR for panoptic segmentation (paper Sec. 4.4): a detector plus a mask head.

Each query's last decoder output attends over the encoder memory (:class:`MHAttentionMap`); the
attention maps, concatenated with the projected last backbone level, are upsampled by an
FPN-style convolutional head (:class:`MaskHeadSmallConv`) that fuses the earlier backbone levels,
giving one mask logit map per query at the finest level's resolution (H/4 for a ResNet).

State-dict layout as official: the detector under ``detr.``, then ``bbox_attention.*`` and
``mask_head.*``, so an official panoptic release file maps by the detector's prefix renames.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_of
from detr_lightning.detr.mask_head import MaskHeadSmallConv, MHAttentionMap
from detr_lightning.detr.set_detector import SetDetector, Targets


def detector_of(net: nn.Module) -> nn.Module:
    """The detector inside a panoptic wrapper (``DETRsegm.detr``), else ``net`` itself."""
    inner = getattr(net, "detr", None)
    return inner if isinstance(inner, nn.Module) else net


class DETRsegm(nn.Module):
    """A :class:`~detr_lightning.detr.set_detector.SetDetector` with DETR's panoptic mask head.

    The detector must implement
    :meth:`~detr_lightning.detr.set_detector.SetDetector.forward_with_hidden` (:class:`DETR` and
    :class:`~detr_lightning.convergence.model.ConvergenceDETR` do) and
    its backbone must return its intermediate levels (``return_interm_layers=True``: a ResNet's
    layer1..layer4, CompactBackbone's c4, c8, p8); the head's widths follow the backbone's
    ``stage_channels``, so every such backbone works.

    Args:
        detr: the detector; its transformer's ``d_model`` and ``nhead`` size the head.
        freeze_detr: no gradients for the detector (the paper's second stage trains the mask
            head on a frozen, already trained detector). The frozen detector also stays in eval
            mode when the module trains: its BatchNorm statistics do not drift (a trainable-BN
            trunk such as CompactBackbone would otherwise keep updating them), dropout is off
            and training-only queries (denoising, query groups) are not computed, so the mask
            head learns on exactly the features and queries it sees at inference. (The official
            code leaves the frozen detector in train mode: FrozenBatchNorm, dropout 0.1.)
        matcher: the criterion's matcher (e.g. ``HungarianMatcher``), or None. When given,
            training forwards with targets compute masks only for the queries it matches to a
            target, the only masks the mask losses read; the other queries' ``pred_masks`` are
            0. Exact (a query's mask depends on its own hidden state only, and the matching on
            the detector's outputs only) and Q / #targets times cheaper; the per-query conv
            head is most of a training step (``benchmarks/bench_panoptic.py`` times both). The
            criterion matches again, with the same result.
        scale_attention: multiply each query's attention maps by heads x real pixels, so that a
            uniform map is 1 everywhere. The official maps sum to 1 over heads x pixels (values
            ~1e-4 next to O(1) features), which leaves a randomly initialised head nearly blind
            to its query. Off by default: official weights need it off; the CPU demo
            (experiments/shapes_panoptic.yaml) turns it on.
    """

    def __init__(
        self,
        detr: SetDetector,
        freeze_detr: bool = False,
        matcher: nn.Module | None = None,
        scale_attention: bool = False,
    ) -> None:
        super().__init__()
        if type(detr).forward_with_hidden is SetDetector.forward_with_hidden:
            raise TypeError(
                f"DETRsegm: {type(detr).__name__} does not implement forward_with_hidden() (the "
                "mask head needs the decoder's hidden states); wrap a DETR or a ConvergenceDETR"
            )
        channels = tuple(getattr(detr.backbone, "stage_channels", ()))
        if len(channels) < 2:
            raise ValueError(
                "DETRsegm: the backbone returns one feature level; the mask head needs the "
                "earlier ones too: build it with return_interm_layers=True"
            )
        self.detr = detr
        self.freeze_detr, self.matcher = freeze_detr, matcher
        self.scale_attention = scale_attention
        if freeze_detr:
            for p in self.detr.parameters():
                p.requires_grad_(False)
            self.detr.eval()
        d, heads = detr.transformer.d_model, detr.transformer.nhead
        self.bbox_attention = MHAttentionMap(d, d, heads, dropout=0.0)
        self.mask_head = MaskHeadSmallConv(d + heads, channels[-2::-1], d)

    def train(self, mode: bool = True) -> DETRsegm:
        """``nn.Module.train``, except that a frozen detector stays in eval mode."""
        super().train(mode)
        if self.freeze_detr:
            self.detr.eval()
        return self

    # What the LightningModule and the optimiser read off a detector, delegated to it (as
    # properties, so the state dict holds each parameter once, under ``detr.``).
    @property
    def backbone(self) -> nn.Module:
        return self.detr.backbone

    @property
    def position_encoding(self) -> nn.Module:
        return self.detr.position_encoding

    @property
    def transformer(self) -> nn.Module:
        return self.detr.transformer

    @property
    def input_proj(self) -> nn.Module:
        return self.detr.input_proj

    @property
    def num_classes(self) -> int:
        return self.detr.num_classes

    @property
    def num_queries(self) -> int:
        return self.detr.num_queries

    @property
    def aux_loss(self) -> bool:
        return self.detr.aux_loss

    @property
    def scoring(self) -> SoftmaxScoring:
        return scoring_of(self.detr)

    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, targets: Targets | None = None
    ) -> dict[str, Any]:
        """Detect objects and predict one mask per query (inputs as :meth:`DETR.forward`;
        ``targets`` go on to the detector, whose training-only extensions read them).

        Returns:
            The detector's outputs (``pred_logits`` [B, Q, K], ``pred_boxes`` [B, Q, 4],
            ``aux_outputs``, ...) plus ``pred_masks`` [B, Q, h_f, w_f]: mask logits at the finest
            backbone level's size (H/4 x W/4 for a ResNet) on the padded canvas; upsample them to
            the canvas, then crop each image's real part.
        """
        out, enc, hs = self.detr.forward_with_hidden(pixel_values, pixel_mask, targets)
        src, mask = enc.features[-1]
        b, _, h, w = src.shape
        # The attention map reads the memory as a feature map, padding masked.
        memory = enc.memory.transpose(1, 2).reshape(b, -1, h, w)
        attention = self.bbox_attention(hs[-1], memory, mask)
        if self.scale_attention:  # [B, Q, n, h, w] x (n * real pixels of each image)
            attention = attention * (attention.shape[2] * mask.flatten(1).sum(1)).view(
                b, 1, 1, 1, 1
            )
        # The head's input is the projected backbone level (as official), not the memory.
        fpns = [feat for feat, _ in enc.features[-2::-1]]
        proj = self.detr.input_proj(src)
        if self.training and self.matcher is not None and targets is not None:
            out["pred_masks"] = self._matched_masks(out, targets, proj, attention, fpns)
            return out
        masks = self.mask_head(proj, attention, fpns)
        out["pred_masks"] = masks.view(b, hs.shape[2], *masks.shape[-2:])
        return out

    def _matched_masks(
        self,
        out: dict[str, Any],
        targets: list[dict[str, Tensor]],
        proj: Tensor,
        attention: Tensor,
        fpns: list[Tensor],
    ) -> Tensor:
        """[B, Q, h_f, w_f] mask logits of the matched queries (0 elsewhere); attention
        [B, Q, n, h, w]."""
        b, q = attention.shape[:2]
        with torch.no_grad():
            indices = self.matcher({k: out[k] for k in ("pred_logits", "pred_boxes")}, targets)
        image = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        query = torch.cat([src for src, _ in indices])
        if not len(query):  # still run the head once: DDP expects its gradients every step
            image, query = image.new_zeros(1), query.new_zeros(1)
        image, query = image.to(attention.device), query.to(attention.device)
        masks = self.mask_head(proj, attention[image, query], fpns, batch_index=image)[:, 0]
        full = masks.new_zeros(b * q, *masks.shape[-2:])
        return full.index_put((image * q + query,), masks).view(b, q, *masks.shape[-2:])
