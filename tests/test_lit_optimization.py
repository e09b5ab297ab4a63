"""LitDETR's optimisation: param groups and their lrs, the lr schedule, the gradient check."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lit import loader, quiet_trainer, tiny_lit

from detr_lightning.detr import build_position_encoding
from detr_lightning.lit_module import NonFiniteLossError
from detr_lightning.schedule import step_schedule


def test_param_groups_split_backbone(tmp_path) -> None:
    lit = tiny_lit(lr_backbone=1e-5)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.strategy.connect(lit)
    lit.trainer = trainer
    opt = lit.configure_optimizers()["optimizer"]
    groups = {g["name"]: g for g in opt.param_groups}
    backbone = {id(p) for p in lit.net.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone
    assert groups["backbone"]["lr"] == 1e-5 and groups["main"]["lr"] == 1e-3
    trainable = {id(p) for p in lit.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    # stem + layer1 stay frozen (never given to the optimizer)
    assert not any(p.requires_grad for p in lit.net.backbone.body.conv1.parameters())


def test_learned_position_encoding_trains_at_the_backbone_lr(tmp_path) -> None:
    """Table 3's learned_at_attn row: the official code keeps the learned embeddings under
    ``backbone.1`` and so trains them at lr_backbone (1e-5), not at the transformer's lr."""
    lit = tiny_lit(lr_backbone=1e-5)
    lit.net.position_encoding = build_position_encoding("learned", 32)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.strategy.connect(lit)
    lit.trainer = trainer
    groups = {g["name"]: g for g in lit.configure_optimizers()["optimizer"].param_groups}
    learned = {id(p) for p in lit.net.position_encoding.parameters()}
    assert len(learned) == 2  # row and column embeddings
    assert learned <= {id(p) for p in groups["backbone"]["params"]}
    assert not learned & {id(p) for p in groups["main"]["params"]}
    assert groups["backbone"]["lr"] == 1e-5


def test_zero_backbone_lr_freezes_backbone(tmp_path) -> None:
    lit = tiny_lit(lr_backbone=0.0)
    assert not any(p.requires_grad for p in lit.net.backbone.parameters())
    trainer = quiet_trainer(tmp_path, max_steps=1)
    lit.trainer = trainer
    opt = lit.configure_optimizers()["optimizer"]
    assert [g["name"] for g in opt.param_groups] == ["main"]


def test_lr_multipliers_split_named_parameters_off_their_groups(tmp_path) -> None:
    lit = tiny_lit(
        lr_backbone=1e-5,
        last_stage="layer4",
        lr_multipliers={"multihead_attn": 0.1, "layer4": 0.5, "decoder.layers.1": 3.0},
        lr_schedule=functools.partial(step_schedule, drop_epochs=1, warmup_steps=2, gamma=0.1),
    )
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(lit, train_dataloaders=loader(2))
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    names = {id(p): n for n, p in lit.net.named_parameters()}

    def members(name: str) -> set[str]:
        return {names[id(p)] for p in groups[name]["params"]}

    trainable = {n for n, p in lit.net.named_parameters() if p.requires_grad}
    # The first matching key wins: decoder layer 1's cross-attention is "multihead_attn" (0.1).
    assert members("multihead_attn") == {n for n in trainable if "multihead_attn" in n}
    assert members("backbone.layer4") == {n for n in trainable if "layer4" in n}
    assert members("decoder.layers.1") == {
        n for n in trainable if "decoder.layers.1" in n and "multihead_attn" not in n
    }
    assert not members("main") & (members("multihead_attn") | members("decoder.layers.1"))
    assert {id(p) for g in groups.values() for p in g["params"]} == {
        id(p) for p in lit.parameters() if p.requires_grad
    }
    # Base lrs are the group's x the factor; the schedule (warm-up, then the drop) keeps ratios.
    base = {"main": 1e-3, "backbone": 1e-5, "multihead_attn": 1e-4, "decoder.layers.1": 3e-3,
            "backbone.layer4": 5e-6}  # fmt: skip
    assert {n: g["initial_lr"] for n, g in groups.items()} == pytest.approx(base)
    factor = groups["main"]["lr"] / 1e-3
    assert factor != pytest.approx(1.0)  # the schedule did move the lrs
    assert {n: g["lr"] for n, g in groups.items()} == pytest.approx(
        {n: lr * factor for n, lr in base.items()}
    )


@pytest.mark.parametrize(
    ("multipliers", "message"),
    [({"no_such_layer": 0.1}, r"no parameter's name contains \['no_such_layer'\]"),
     ({"multihead_attn": 0.0}, r"model.lr_multipliers.multihead_attn=0.0: must be a positive"),
     ({"multihead_attn": "x"}, r"model.lr_multipliers.multihead_attn='x'")],
)  # fmt: skip
def test_lr_multipliers_that_would_change_nothing_are_errors(multipliers, message) -> None:
    lit = tiny_lit(lr_backbone=1e-5, lr_multipliers=multipliers)
    lit.trainer = quiet_trainer(Path("."), max_steps=1)
    with pytest.raises(ValueError, match=message):
        lit.configure_optimizers()


def test_a_multiplier_on_frozen_parameters_adds_no_group_and_no_error() -> None:
    """The panoptic recipe's stage 2 freezes the detector, sampling offsets included; here the
    backbone (``lr_backbone=0``) holds every ``layer4`` parameter."""
    lit = tiny_lit(lr_backbone=0.0, lr_multipliers={"layer4": 0.1}, last_stage="layer4")
    lit.trainer = quiet_trainer(Path("."), max_steps=1)
    assert any("layer4" in n for n, _ in lit.net.named_parameters())
    groups = lit.configure_optimizers()["optimizer"].param_groups
    assert [g["name"] for g in groups] == ["main"]
    assert {id(p) for p in groups[0]["params"]} == {
        id(p) for p in lit.parameters() if p.requires_grad
    }


class _LrRecorder(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[tuple[int, int, float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        g = {x["name"]: x["lr"] for x in trainer.optimizers[0].param_groups}
        self.lrs.append((trainer.current_epoch, trainer.global_step, g["main"], g["backbone"]))


def test_schedule_drops_at_epoch_boundary_with_warmup(tmp_path) -> None:
    lit = tiny_lit(
        lr_backbone=1e-4,
        lr_schedule=functools.partial(step_schedule, drop_epochs=1, warmup_steps=2, gamma=0.1),
    )
    rec = _LrRecorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[rec], limit_val_batches=0)
    trainer.fit(lit, train_dataloaders=loader(3))
    factors = [0.5, 1.0, 1.0, 0.1, 0.1, 0.1]  # warm-up over 2 steps; epoch 1 = steps 3..5
    assert [(e, s) for e, s, _, _ in rec.lrs] == [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5)]
    assert [m for _, _, m, _ in rec.lrs] == pytest.approx([1e-3 * f for f in factors])
    assert [b for _, _, _, b in rec.lrs] == pytest.approx([1e-4 * f for f in factors])


def test_linear_lr_scaling_uses_total_batch(tmp_path) -> None:
    lit = tiny_lit(lr_backbone=1e-5, lr_scaling="linear", batch_size=2)
    trainer = quiet_trainer(tmp_path, max_steps=1, accumulate_grad_batches=4)
    lit.trainer = trainer
    groups = {g["name"]: g["lr"] for g in lit.configure_optimizers()["optimizer"].param_groups}
    assert groups == pytest.approx({"main": 1e-3 * 8 / 64, "backbone": 1e-5 * 8 / 64})


def test_non_finite_gradients_stop_before_the_step(tmp_path) -> None:
    lit = tiny_lit()
    weight = lit.net.class_embed.weight
    weight.register_hook(lambda g: g * float("inf") if lit.global_step == 1 else g)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    with pytest.raises(NonFiniteLossError, match=r"gradients at global step 1 .*finite loss"
                       r", in net\.class_embed\.weight\. "):  # fmt: skip
        trainer.fit(lit, train_dataloaders=loader(3))
    assert all(torch.isfinite(p).all() for p in lit.parameters())


def test_a_gradient_scaler_handles_inf_gradients_itself() -> None:
    """16-mixed (CUDA only under Lightning): an overflowing step is the scaler's to skip, not an
    error; without a scaler the same gradients stop training."""
    from types import SimpleNamespace

    lit = tiny_lit()
    optimizer = torch.optim.AdamW(lit.parameters())
    for p in lit.parameters():
        p.grad = torch.full_like(p, float("inf"))
    scaler = torch.amp.GradScaler("cpu")
    lit._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler))
    lit.on_before_optimizer_step(optimizer)  # no error
    lit._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(), global_step=3,
                                   current_epoch=0, checkpoint_callbacks=[], ckpt_path=None,
                                   optimizers=[optimizer])  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="gradients at global step 3"):
        lit.on_before_optimizer_step(optimizer)


def test_gradients_too_large_for_their_norm_are_reported_as_such(tmp_path) -> None:
    """Every gradient finite but the total norm past float32's range (a diverging run)."""
    lit = tiny_lit()
    weight = lit.net.class_embed.weight
    weight.register_hook(lambda g: torch.full_like(g, 1e30) if lit.global_step == 1 else g)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    with pytest.raises(
        NonFiniteLossError, match=r"total norm overflows; largest \|gradient\| 1e\+30"
    ):
        trainer.fit(lit, train_dataloaders=loader(3))
