"""target_keys: config keys a ``_target_`` would reject are found before instantiation."""

from __future__ import annotations

from omegaconf import OmegaConf

from detr_lightning.utils.target_keys import (
    CONVERGENCE_COUNTERPARTS,
    target_key_errors,
    unknown_target_keys,
)


def takes_a_and_b(a: int, b: int = 1) -> tuple[int, int]:
    return a, b


def takes_anything(a: int, **kwargs: int) -> int:
    return a


HERE = __name__


def test_unknown_keys_are_found_at_every_depth_and_in_lists() -> None:
    cfg = OmegaConf.create({
        "_target_": f"{HERE}.takes_a_and_b",
        "a": 1,
        "c": 2,  # rejected
        "b": {"_target_": f"{HERE}.takes_a_and_b", "a": 1, "d": 3},  # d rejected
        "_partial_": True,  # Hydra's own keys are not arguments
    })  # fmt: skip
    cfg2 = OmegaConf.create({"x": [{"_target_": f"{HERE}.takes_a_and_b", "e": 1}]})
    assert unknown_target_keys(cfg, "m") == [
        ("m.c", "c", f"{HERE}.takes_a_and_b"),
        ("m.b.d", "d", f"{HERE}.takes_a_and_b"),
    ]
    assert unknown_target_keys(cfg2, "m") == [("m.x[0].e", "e", f"{HERE}.takes_a_and_b")]


def test_targets_taking_any_keyword_or_unreadable_are_not_judged() -> None:
    cfg = OmegaConf.create({
        "a": {"_target_": f"{HERE}.takes_anything", "a": 1, "zzz": 2},
        "b": {"_target_": "no_such_module.Thing", "q": 1},
        "c": {"not_a_target": 1},
    })  # fmt: skip
    assert unknown_target_keys(cfg, "m") == []


def test_a_paper_model_key_names_the_chosen_lever_groups() -> None:
    cfg = OmegaConf.create({"_target_": "detr_lightning.detr.model.DETR",
                            "num_queries": 10, "box_refinement": {}})  # fmt: skip
    chosen = {"cls_loss": "varifocal", "refine": "boxes", "queries": None, "data": "shapes"}
    (message,) = target_key_errors(cfg, "model.net", chosen)
    assert message.startswith("model.net.box_refinement: ")
    assert "chosen here: cls_loss=varifocal, refine=boxes" in message
    assert "add model=convergence" in message
    (generic,) = target_key_errors(cfg, "model.net")  # no Hydra run: every group
    assert "cross_attention" in generic and "chosen here" not in generic
    packaged = {"proposal_head@model.net.queries.head": "linear", "refine": "boxes"}
    (message,) = target_key_errors(cfg, "model.net", packaged)
    assert "chosen here: refine=boxes, proposal_head@model.net.queries.head=linear" in message
    other = OmegaConf.create({"_target_": f"{HERE}.takes_a_and_b", "a": 1, "z": 0})
    (message,) = target_key_errors(other, "data")
    assert "model=convergence" not in message and "remove it; " in message


def test_a_typo_on_a_paper_target_gets_the_closest_argument_not_the_lever_hint() -> None:
    """Only a key the convergence counterpart accepts can come from a lever group: a misspelt
    backbone or matcher key (no counterpart), or one ConvergenceCriterion rejects too, is a
    typo, answered with the target's arguments, the closest first."""
    cases = [
        ("detr_lightning.detr.backbone.Backbone", "nmae", "name"),
        ("detr_lightning.detr.matcher.HungarianMatcher", "cost_center", "cost_class"),
        ("detr_lightning.detr.criterion.SetCriterion", "eos_coeff", "eos_coef"),
    ]
    chosen = {"refine": "boxes"}
    for target, key, closest in cases:
        cfg = OmegaConf.create({"_target_": target, key: 1})
        (message,) = target_key_errors(cfg, "model.x", chosen)
        assert "model=convergence" not in message and "lever group" not in message, message
        assert f"did you mean {closest!r}?" in message, message
        assert f"{target}'s arguments: " in message and closest in message.split("arguments: ")[1]


def test_counterparts_are_the_targets_model_convergence_sets() -> None:
    lever = OmegaConf.load("conf/model/convergence.yaml")
    paper = OmegaConf.load("conf/model/detr.yaml")
    assert CONVERGENCE_COUNTERPARTS == {
        paper[k]._target_: lever[k]._target_ for k in ("net", "criterion")
    }
