"""Mixed precision and compile on CPU: bf16-mixed steps stay finite, the matcher and the losses
run in float32 under autocast, ``model.compile`` runs a step."""

import pytest
import torch
from lit import fake_batch, loader, quiet_trainer, tiny_lit

from detr_lightning.loss import HungarianMatcher, SetCriterion


def test_bf16_mixed_training_steps_give_finite_losses(tmp_path) -> None:
    import lightning as L

    losses: list[torch.Tensor] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            losses.append(outputs["loss"].detach())

    trainer = quiet_trainer(tmp_path, precision="bf16-mixed", max_steps=3, limit_val_batches=0,
                            callbacks=[Record()])  # fmt: skip
    trainer.fit(tiny_lit(), loader(3))
    assert len(losses) == 3
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses)


def test_bf16_mixed_clips_the_gradient_of_fused_adamw(tmp_path) -> None:
    """The paper presets' combination (fused AdamW, clip 0.1) under bf16-mixed, which Lightning's
    own clipping refuses: the step runs and the gradient it applies has norm 0.1."""
    import functools

    import lightning as L

    norms: dict[str, list[float]] = {"before": [], "after": []}

    def total_norm(module) -> float:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()

    class Record(L.Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
            norms["before"].append(total_norm(module))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            norms["after"].append(total_norm(module))  # zero_grad comes with the next step

    module = tiny_lit()
    module.optimizer_factory = functools.partial(torch.optim.AdamW, lr=1e-3, fused=True)
    trainer = quiet_trainer(tmp_path, precision="bf16-mixed", max_steps=2, limit_val_batches=0,
                            gradient_clip_val=0.1, callbacks=[Record()])  # fmt: skip
    trainer.fit(module, loader(2))
    assert trainer.optimizers[0].defaults["fused"] is True
    assert len(norms["after"]) == 2 and all(n > 0.1 for n in norms["before"])
    assert norms["after"] == pytest.approx([0.1, 0.1], rel=1e-4)


def test_matcher_indices_under_bf16_equal_the_float32_ones_on_the_same_outputs() -> None:
    torch.manual_seed(0)
    net = tiny_lit(num_queries=20).net.eval()
    batch = fake_batch(3, batch=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = net(batch.pixel_values, batch.pixel_mask)
    assert outputs["pred_logits"].dtype == torch.bfloat16  # the head really ran in bf16
    layers = [outputs, *outputs["aux_outputs"]]
    matcher = HungarianMatcher()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = matcher.match_layers(layers, batch.targets)
        cost = matcher.cost_matrix(outputs["pred_logits"][0].float(), outputs["pred_boxes"][0].float(),
                                   batch.targets[0]["labels"], batch.targets[0]["boxes"])  # fmt: skip
    assert cost.dtype == torch.float32  # softmax, L1 and GIoU costs stay float32 under autocast
    as_float = [{k: v.float() for k, v in out.items() if k != "aux_outputs"} for out in layers]
    reference = [matcher(out, batch.targets) for out in as_float]  # float32, no autocast
    for got, want in zip(under_autocast, reference, strict=True):
        for (rows, cols), (ref_rows, ref_cols) in zip(got, want, strict=True):
            assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_are_float32_under_autocast(dtype: torch.dtype) -> None:
    """bf16-mixed and 16-mixed: the matcher, the softmax of the class loss and GIoU in float32
    (16-mixed itself needs a GPU under Lightning; CPU autocast to fp16 runs the same code)."""
    torch.manual_seed(0)
    net = tiny_lit().net.train()
    batch = fake_batch(1)
    criterion = SetCriterion(3, HungarianMatcher())
    with torch.autocast("cpu", dtype=dtype):
        losses = criterion(net(batch.pixel_values, batch.pixel_mask), batch.targets)
        total = criterion.weighted_total(losses)
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_compile_switch_runs_a_step_and_counts_graphs(tmp_path) -> None:
    """The wiring, with Dynamo's "eager" backend (seconds); inductor is the slow test below."""
    module = tiny_lit(compile={"backend": "eager"})
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(module, loader(2))
    assert module.net._compiled_call_impl is not None  # compiled in place: same keys
    assert set(module.net.state_dict()) == set(tiny_lit().net.state_dict())
    assert trainer.callback_metrics["compile/graphs"] >= 1
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.slow
def test_compile_true_runs_training_steps_with_inductor(tmp_path) -> None:
    """model.compile=true (inductor) on CPU: about 2 minutes on 2 cores."""
    module = tiny_lit(compile=True)
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(module, loader(2))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
