"""Content-conditioned positional queries: the example that ships with the decoder-hook slot
(``model.net.decoder_hook``, chosen with ``decoder_hook=conditional``).

In the direction of Conditional DETR (Meng et al. 2021, arXiv 2108.06152), whose cross-attention
query is a spatial embedding scaled elementwise by an MLP of the decoder's content
(``lambda_q * p_s``): here every decoder layer after the first takes the model's positional
queries scaled by an MLP of the previous layer's output. It keeps the paper's learned queries as
``p_s`` (there are no reference points) and the scaled queries enter wherever the layer adds its
positional queries (self- and cross-attention), so it is a lever, not a reproduction of that
model. The MLP starts at ``lambda = 1``: until it learns, the model computes exactly what it
computes without the hook.
"""

from __future__ import annotations

from torch import Tensor, nn

from detr_lightning.convergence.dims import ModelDims
from detr_lightning.detr.set_detector import MLP, EncodedImage
from detr_lightning.detr.transformer_stacks import DecoderLayerHook


class ConditionalQueryScale(nn.Module):
    """A decoder-hook source: built from the model's sizes, it gives each forward pass a
    :class:`~detr_lightning.detr.transformer_stacks.DecoderLayerHook` (:meth:`for_images`)."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        d = dims.d_model
        self.scale = MLP(d, d, d, 2)
        nn.init.zeros_(self.scale.layers[-1].weight)
        nn.init.ones_(self.scale.layers[-1].bias)

    def for_images(self, enc: EncodedImage, position: Tensor | None) -> DecoderLayerHook:
        """The hook of one forward pass. ``position`` [B, Q, d]: the positional queries the
        decoder starts from (denoising rows first, when there are any)."""
        if position is None:
            raise ValueError(
                "model.net.decoder_hook=ConditionalQueryScale scales the positional queries, but "
                "model.net.queries gave none: use queries=learned (the paper's queries)."
            )
        return _ScaledQueries(self.scale, position)


class _ScaledQueries:
    """Layer 0 keeps ``position``; layer i > 0 uses ``position * scale(hidden_{i-1})``."""

    def __init__(self, scale: nn.Module, position: Tensor) -> None:
        self.scale, self.position = scale, position

    def __call__(self, index: int, hidden: Tensor | None) -> Tensor | None:
        return None if hidden is None else self.position * self.scale(hidden)

    def memory_bias(self) -> Tensor | None:
        return None
