"""A mapping without ``_target_`` where a target expects a component (a module, a factory, a
mapping of modules) is named with its config path, the argument and the fix before anything is
built, instead of Hydra's "'dict' object is not callable" from deep inside."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from hydra_jobs import compose_job
from omegaconf import OmegaConf
from torch import nn

from detr_lightning.utils.component_nodes import component_node_errors
from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.run_component_keys import check_model_keys

HERE = __name__


def takes_parts(
    module: nn.Module | None = None,
    factory: Callable[[int], nn.Module] | None = None,
    terms: Mapping[str, nn.Module] | None = None,
    options: dict | None = None,
    sizes: Mapping[str, int] | None = None,
) -> None:
    return None


def test_plain_mappings_are_refused_only_where_a_component_is_expected() -> None:
    cfg = OmegaConf.create({
        "_target_": f"{HERE}.takes_parts",
        "module": {"channels": 3},  # refused: no _target_
        "factory": {"_target_": "torch.nn.Identity", "_partial_": True},  # fine
        "terms": {"ok": {"_target_": "torch.nn.Identity"}, "bad": {"weight": 1}},
        "options": {"a": 1},  # a dict is what it takes
        "sizes": {"a": 1},  # a mapping of numbers
    })  # fmt: skip
    errors = component_node_errors(cfg, "model.x")
    assert [e.split(":")[0] for e in errors] == ["model.x.module", "model.x.terms.bad"]
    assert "without `_target_`" in errors[0] and "'module'" in errors[0]
    assert "give model.x.module._target_=" in errors[0]


@pytest.mark.parametrize(
    ("overrides", "path", "group"),
    [
        (["experiment=shapes", "~denoiser", "+model.net.denoiser.groups=3"],
         "model.net.denoiser", "denoiser=dn"),
        (["experiment=shapes", "~cross_attention", "+model.net.attention_prior.min_scale=1"],
         "model.net.attention_prior", "attention_prior=box"),
        (["experiment=shapes_plain", "loss_term=aspect",
          "~model.criterion.extra_terms.aspect._target_"],
         "model.criterion.extra_terms.aspect", "loss_term=aspect"),
    ],
)  # fmt: skip
def test_a_group_key_set_without_its_group_names_the_path_and_the_group(
    overrides, path, group, tmp_path
) -> None:
    cfg = compose_job(overrides, tmp_path)
    with pytest.raises(ConfigError) as info:
        check_model_keys(cfg)
    message = str(info.value)
    assert f"{path}: a mapping without `_target_`" in message
    assert f"choose the group ({group})" in message and f"{path}._target_=" in message
