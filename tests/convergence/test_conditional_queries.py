"""The decoder-hook slot (``model.net.decoder_hook``) and its shipped example: each decoder layer
after the first gets the learned positional queries scaled by an MLP of the previous layer's
output; at initialisation the model is the one without the hook."""

from __future__ import annotations

import levers
import pytest
import torch

from detr_lightning.convergence.conditional_queries import ConditionalQueryScale
from detr_lightning.convergence.criterion import ConvergenceCriterion
from detr_lightning.convergence.model import ConvergenceDETR
from detr_lightning.detr.transformer import Transformer
from detr_lightning.loss import HungarianMatcher


def test_at_initialisation_the_model_is_the_one_without_the_hook() -> None:
    plain, hooked = levers.model(), levers.model(decoder_hook=ConditionalQueryScale)
    missing, unexpected = hooked.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("decoder_hook.") for k in missing)
    pixel_values, pixel_mask, targets = levers.batch()
    for mode in ("train", "eval"):
        plain.train(mode == "train")
        hooked.train(mode == "train")
        expected, got = plain(pixel_values, pixel_mask), hooked(pixel_values, pixel_mask)
        torch.testing.assert_close(got["pred_logits"], expected["pred_logits"])
        torch.testing.assert_close(got["pred_boxes"], expected["pred_boxes"])


def test_each_layer_after_the_first_gets_the_queries_scaled_by_the_last_output() -> None:
    model = levers.model(decoder_hook=ConditionalQueryScale).eval()
    scale = model.decoder_hook.scale
    torch.nn.init.normal_(scale.layers[-1].weight)  # away from lambda = 1
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (query_pos, output) of each layer
    for layer in model.transformer.decoder.layers:
        layer.register_forward_hook(lambda _m, args, out: seen.append((args[4], out)))
    pixel_values, pixel_mask, _ = levers.batch()
    with torch.no_grad():
        model(pixel_values, pixel_mask)
        learned = model.queries.embed.weight[None].expand(2, -1, -1)
        norm = model.transformer.decoder.norm
        expected = [learned] + [learned * scale(norm(out)) for _, out in seen[:-1]]
    assert len(seen) == 3
    for (query_pos, _), want in zip(seen, expected, strict=True):
        torch.testing.assert_close(query_pos, want)
    assert not torch.allclose(seen[1][0], learned)  # the scaling took effect


def test_the_hook_trains_with_the_detector() -> None:
    model = levers.model(decoder_hook=ConditionalQueryScale).train()
    pixel_values, pixel_mask, targets = levers.batch()
    losses = ConvergenceCriterion(3, HungarianMatcher())(model(pixel_values, pixel_mask), targets)
    sum(losses.values()).backward()
    assert model.decoder_hook.scale.layers[-1].weight.grad.abs().sum() > 0


def test_a_hook_beside_box_refinement_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match="decoder_hook and model.net.box_refinement"):
        levers.model(queries=levers.anchors(), box_refinement=levers.REFINE,
                     decoder_hook=ConditionalQueryScale)  # fmt: skip


def test_a_hook_needs_positional_queries_in_attention() -> None:
    backbone, pos, _ = levers.parts()
    transformer = Transformer(d_model=32, nhead=4, num_encoder_layers=0, num_decoder_layers=2,
                              query_pos="input")  # fmt: skip
    with pytest.raises(ValueError, match="decoder_hook .*query_pos=attn"):
        ConvergenceDETR(backbone, pos, transformer, 3, 5, decoder_hook=ConditionalQueryScale)
