"""target_keys: config keys a ``_target_`` would reject are found before instantiation."""

from __future__ import annotations

from omegaconf import OmegaConf

from detr_lightning.utils.target_keys import target_key_errors, unknown_target_keys


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
    cfg = OmegaConf.create({"_target_": "detr_lightning.detr.matcher.HungarianMatcher",
                            "cost_class": 1.0, "focal_typo": True})  # fmt: skip
    chosen = {"cls_loss": "varifocal", "refine": "boxes", "queries": None, "data": "shapes"}
    (message,) = target_key_errors(cfg, "model.criterion.matcher", chosen)
    assert message.startswith("model.criterion.matcher.focal_typo: ")
    assert "chosen here: cls_loss=varifocal, refine=boxes" in message
    assert "add model=convergence" in message
    (generic,) = target_key_errors(cfg, "model.criterion.matcher")  # no Hydra run: every group
    assert "cross_attention" in generic and "chosen here" not in generic
    packaged = {"proposal_head@model.net.queries.head": "linear", "refine": "boxes"}
    (message,) = target_key_errors(cfg, "model.criterion.matcher", packaged)
    assert "chosen here: refine=boxes, proposal_head@model.net.queries.head=linear" in message
    other = OmegaConf.create({"_target_": f"{HERE}.takes_a_and_b", "a": 1, "z": 0})
    (message,) = target_key_errors(other, "data")
    assert "model=convergence" not in message and "remove it" in message
