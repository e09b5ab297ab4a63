"""Capture DETR's attention maps with hooks, leaving the model's outputs and weights alone.

The transformer calls ``nn.MultiheadAttention`` with ``need_weights=False`` (the fast path).
While an :class:`AttentionCapture` is active, a forward pre-hook on the last encoder layer's
self-attention and on the last decoder layer's cross-attention switches that call to
``need_weights=True, average_attn_weights=True``, and a forward hook keeps the weights
(averaged over heads). The layers still use only the attention output, so the detector's
outputs are those of a normal forward up to float rounding (the weights path computes the same
softmax without the fused kernel). Works for :class:`~detr_lightning.detr.model.DETR` and
:class:`~detr_lightning.convergence.model.ConvergenceDETR` in eval mode (no denoising queries:
the cross-attention rows are the output queries); a model without encoder layers has no
encoder self-attention (``encoder`` is None). With ``cross_attention=deformable`` the decoder map
is where the layer's sampling points read, each point's bilinear weights times its weight
(:class:`~detr_lightning.convergence.deformable_attention.BoxDeformableAttention`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass
class AttentionMaps:
    """Head-averaged attention of the last encoder and decoder layers, on the feature map.

    Attributes:
        decoder: [B, Q, h, w] each query's cross-attention over the feature map (sums to 1).
        encoder: [B, h, w, h, w] the self-attention of every feature position (the first two
            dims) over all positions (the last two; sums to 1), or None without encoder layers.
        mask: [B, h, w] bool, True on real (unpadded) feature positions.
    """

    decoder: Tensor
    encoder: Tensor | None
    mask: Tensor


def _attention_modules(net: nn.Module) -> tuple[nn.Module | None, nn.Module]:
    transformer = getattr(net, "transformer", None)
    if transformer is None or not hasattr(net, "input_proj"):
        raise TypeError(
            f"{type(net).__name__}: attention capture needs a DETR-style model with "
            "``input_proj`` and ``transformer.encoder/decoder`` (DETR, ConvergenceDETR)"
        )
    enc_layers = transformer.encoder.layers
    encoder = enc_layers[-1].self_attn if len(enc_layers) else None
    return encoder, transformer.decoder.layers[-1].multihead_attn


class AttentionCapture:
    """``with AttentionCapture(net) as cap: out = net(x, m)`` then ``cap.maps()``.

    Args:
        net: the detector (``DETR`` / ``ConvergenceDETR``, or a panoptic ``DETRsegm``).
        encoder: also capture the last encoder layer's self-attention ([B, S, S]: for large
            images S = h*w is in the thousands; skip it when only the decoder maps are needed).
    """

    def __init__(self, net: nn.Module, encoder: bool = True) -> None:
        from detr_lightning.detr.segmentation import detector_of

        self.net = net = detector_of(net)  # a panoptic DETRsegm: hooks go on its detector
        enc, self._decoder_attn = _attention_modules(net)
        self._encoder_attn = enc if encoder else None
        self._handles: list[Any] = []
        self._weights: dict[str, Tensor] = {}
        self._feature_shape: tuple[int, int] | None = None

    def __enter__(self) -> AttentionCapture:
        self._weights.clear()

        def want_weights(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return args, {**kwargs, "need_weights": True, "average_attn_weights": True}

        def keep(name: str) -> Any:
            def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                # [B, L, S]; the mask is the call's key_padding_mask (True = padding there)
                self._weights[name] = output[1].detach()
                self._weights[name + "_pad"] = kwargs["key_padding_mask"].detach()

            return hook

        def feature_shape(module: nn.Module, args: tuple, output: Tensor) -> None:
            self._feature_shape = tuple(output.shape[-2:])

        modules = {"decoder": self._decoder_attn, "encoder": self._encoder_attn}
        for name, module in modules.items():
            if module is None:
                continue
            self._handles.append(module.register_forward_pre_hook(want_weights, with_kwargs=True))
            self._handles.append(module.register_forward_hook(keep(name), with_kwargs=True))
        self._handles.append(self.net.input_proj.register_forward_hook(feature_shape))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def maps(self, num_queries: int | None = None) -> AttentionMaps:
        """The last captured forward's maps; ``num_queries`` keeps the first Q decoder rows."""
        if "decoder" not in self._weights or self._feature_shape is None:
            raise RuntimeError("AttentionCapture.maps(): run the model inside the `with` first")
        h, w = self._feature_shape
        dec = self._weights["decoder"]
        b = dec.shape[0]
        if dec.shape[-1] != h * w:
            raise RuntimeError(
                f"decoder attention has {dec.shape[-1]} keys, the feature map {h}x{w}: this "
                "model's decoder reads something other than the feature map"
            )
        dec = dec[:, :num_queries] if num_queries is not None else dec
        mask = ~self._weights["decoder_pad"].reshape(b, h, w)
        enc = self._weights.get("encoder")
        if enc is not None:
            enc = enc.reshape(b, h, w, h, w)
        return AttentionMaps(dec.reshape(b, dec.shape[1], h, w), enc, mask)
