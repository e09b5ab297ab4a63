"""The public API for official DETR release files
(``from detr_lightning.checkpoint import load_official_detr``); the code lives in
:mod:`detr_lightning.detr.official`."""

from detr_lightning.detr.official import (
    convert_official_state_dict,
    infer_official_config,
    load_official_detr,
    load_pretrained_into,
    load_state_dict_into,
    read_official_state_dict,
)

__all__ = [
    "convert_official_state_dict",
    "infer_official_config",
    "load_official_detr",
    "load_pretrained_into",
    "load_state_dict_into",
    "read_official_state_dict",
]
