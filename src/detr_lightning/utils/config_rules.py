"""Type rules of config values, for :mod:`detr_lightning.utils.config_check`: the model sizes
wherever they are under ``model``, the data module's booleans, and the keys of the inference
entry points (predict, visualize, export). Only omegaconf and the standard library are imported.

A rule is ``(accepts, what it must be, example fix)``; a key absent from the config is skipped,
so the entry points' keys cost nothing in training configs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

Rule = tuple[Callable[[Any], bool], str, str]


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return is_int(v) and v >= 1


def _positive_or_null(v: Any) -> bool:
    return v is None or _positive(v)


def _fraction(v: Any) -> bool:
    return is_number(v) and 0 <= v <= 1


def _ints(n: int) -> Callable[[Any], bool]:
    def accepts(v: Any) -> bool:
        return (
            (isinstance(v, (list, tuple)) or OmegaConf.is_list(v))
            and len(v) == n
            and all(_positive(i) for i in v)
        )

    return accepts


def _device(v: Any) -> bool:
    return v in (None, "", "auto", "cpu", "cuda", "mps") or (
        isinstance(v, str) and re.fullmatch(r"cuda:\d+", v) is not None
    )


_POSITIVE = "a positive integer"

# Model sizes users override, checked under whatever node holds them (model.net.num_queries,
# model.net.transformer.d_model, a lever's num_points...): name -> (accepts, what, example value).
SIZE_RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "num_queries": (_positive, _POSITIVE, "100"),
    "d_model": (_positive, _POSITIVE, "256"),
    "hidden_dim": (_positive, _POSITIVE, "256"),
    "nhead": (_positive, _POSITIVE, "8"),
    "dim_feedforward": (_positive, _POSITIVE, "2048"),
    "num_encoder_layers": (lambda v: is_int(v) and v >= 0, "an integer >= 0", "6"),
    "num_decoder_layers": (_positive, _POSITIVE, "6"),
    "num_points": (_positive, _POSITIVE, "4"),
}

_BOOL = "true or false"
DATA_RULES: dict[str, Rule] = {
    "data.keep_empty": (lambda v: isinstance(v, bool), _BOOL, "data.keep_empty=true"),
    "data.exif_transpose": (lambda v: isinstance(v, bool), _BOOL, "data.exif_transpose=true"),
    "data.pin_memory": (lambda v: isinstance(v, bool), _BOOL, "data.pin_memory=false"),
    "data.persistent_workers": (lambda v: isinstance(v, bool), _BOOL,
                                "data.persistent_workers=true"),
    "data.group_by_aspect_ratio": (lambda v: isinstance(v, bool), _BOOL,
                                   "data.group_by_aspect_ratio=false"),
    "data.coco_id_space": (lambda v: v is None or isinstance(v, bool),
                           "null (decided from the categories), true or false",
                           "data.coco_id_space=null"),
    "data.pad_to_multiple": (_positive_or_null, "null or a positive integer",
                             "data.pad_to_multiple=32"),
}  # fmt: skip

# Top-level keys of conf/predict.yaml, visualize.yaml and export.yaml.
ENTRY_RULES: dict[str, Rule] = {
    # predict: null = the evaluation split; visualize: ??? (required), so an unset one is named
    "input": (lambda v: v is None or (isinstance(v, str) and v != ""),
              "an image or a folder of images (a name Hydra reads as a number: quote it, "
              "input=\"'2024'\")", "input=photos/"),
    "batch_size": (_positive, "a positive integer (images per forward)", "batch_size=4"),
    "device": (_device, "auto, cpu, cuda, cuda:N (N a GPU index) or mps", "device=cuda:0"),
    "draw.enabled": (lambda v: isinstance(v, bool), _BOOL, "draw.enabled=false"),
    "draw.score_threshold": (_fraction, "a number in [0, 1]", "draw.score_threshold=0.5"),
    "draw.top_k": (_positive_or_null, "a positive integer, or null for all",
                   "draw.top_k=20"),
    "draw.line_width": (_positive, _POSITIVE, "draw.line_width=2"),
    "draw.font_size": (_positive_or_null, "null or a positive integer", "draw.font_size=16"),
    "score_threshold": (_fraction, "a number in [0, 1]", "score_threshold=0.5"),
    "max_objects": (_positive, _POSITIVE, "max_objects=6"),
    "num_points": (_positive, _POSITIVE, "num_points=4"),
    "example_size": (_ints(2), "two positive integers [height, width]",
                     "example_size=[256,320]"),
    "verify_sizes": (lambda v: (isinstance(v, list) or OmegaConf.is_list(v))
                     and all(_ints(3)(s) for s in v),
                     "a list of [batch, height, width], each three positive integers",
                     "verify_sizes=[[2,160,224]]"),
    "atol": (lambda v: is_number(v) and v >= 0, "a number >= 0", "atol=1e-4"),
    "rtol": (lambda v: is_number(v) and v >= 0, "a number >= 0", "rtol=1e-5"),
}  # fmt: skip


def _size_paths(node: Any, path: str) -> list[tuple[str, str]]:
    """``(config path, name)`` of every :data:`SIZE_RULES` key under a plain container, except
    interpolations (``hidden_dim: ${..transformer.d_model}``: its source is checked)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in SIZE_RULES and not (isinstance(value, str) and value.startswith("${")):
                found.append((here, str(key)))
            found += _size_paths(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _size_paths(value, f"{path}[{i}]")
    return found


def size_rules(cfg: DictConfig) -> dict[str, Rule]:
    """A rule per model size key present under ``cfg.model`` (full config path -> rule)."""
    model = cfg.get("model") if isinstance(cfg, DictConfig) else None
    if not OmegaConf.is_dict(model):
        return {}
    tree = OmegaConf.to_container(model, resolve=False)
    rules: dict[str, Rule] = {}
    for key, name in _size_paths(tree, "model"):
        accepts, what, example = SIZE_RULES[name]
        rules[key] = (accepts, what, f"{key}={example}")
    return rules
