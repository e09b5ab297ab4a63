"""Clipping the true gradient of a fused optimizer under a gradient scaler (16-mixed) and without
one (bf16-mixed): the clipped gradient and the fused step equal an fp32 reference."""

import pytest
import torch

from detr_lightning.utils.clipping import clip_true_gradients


def _model_and_loss(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(8, 4)
    return model, lambda: 100.0 * model(x).pow(2).mean()  # a gradient norm far above 0.1


def _reference_clipped_grads(clip: float) -> list[torch.Tensor]:
    """fp32 gradients, scaled by hand to a total norm of at most ``clip``."""
    model, loss = _model_and_loss()
    loss().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads)).item()
    assert 10.0 < norm < 1000.0  # clip=0.1 acts; clip=1e4 would act only on 1024x scaled grads
    return [g * min(1.0, clip / norm) for g in grads]


# eps=0.1 makes AdamW's update depend on the gradient's scale, so a step that divided by the
# loss scale a second time would not match the reference.
@pytest.mark.parametrize("clip", [0.1, 1e4])
@pytest.mark.parametrize("scale", [None, 1024.0])
def test_fused_adamw_step_on_clipped_true_gradients_equals_the_reference(clip, scale) -> None:
    want_grads = _reference_clipped_grads(clip)
    model, loss = _model_and_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=0.1, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale) if scale else None
    (scaler.scale(loss()) if scaler else loss()).backward()
    clip_true_gradients(optimizer, clip, "norm", scaler)
    for p, want in zip(model.parameters(), want_grads, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-8)
    if scaler:
        scaler.step(optimizer)  # must not divide by the scale a second time
        scaler.update()
    else:
        optimizer.step()

    reference, _ = _model_and_loss()
    plain = torch.optim.AdamW(reference.parameters(), lr=1e-2, eps=0.1, foreach=False)
    for p, g in zip(reference.parameters(), want_grads, strict=True):
        p.grad = g
    plain.step()
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_clip_by_value_and_unknown_algorithm() -> None:
    model, loss = _model_and_loss()
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    loss().backward()
    raw = [p.grad.clone() for p in model.parameters()]
    clip_true_gradients(optimizer, 0.5, "value")
    for p, g in zip(model.parameters(), raw, strict=True):
        assert torch.equal(p.grad, g.clamp(-0.5, 0.5))
    with pytest.raises(ValueError, match="gradient_clip_algorithm"):
        clip_true_gradients(optimizer, 0.5, "max")
