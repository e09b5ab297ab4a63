"""Official DETR release keys: renaming to this project's, panoptic split, architecture inference.

A release's detector keys (``backbone.0.body.*`` the ResNet trunk, ``backbone.1.*`` a learned
position encoding, then the transformer and heads under their own names) map onto
:class:`~detr_lightning.detr.model.DETR`'s by two prefix renames; a panoptic release holds them
under ``detr.`` beside the mask head's ``bbox_attention.*`` and ``mask_head.*``. Reading and
loading files is :mod:`detr_lightning.detr.official`'s.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from detr_lightning.detr.state_dicts import CLASS_HEAD, num_classes

_PREFIXES = (("backbone.0.", "backbone."), ("backbone.1.", "position_encoding."))
# The detector's prefix in panoptic files (and in DETRsegm), and the mask head's parts.
DETR_PREFIX = "detr."
MASK_PARTS = ("bbox_attention.", "mask_head.")
_RESNETS = {
    (False, 2): "resnet18",
    (False, 6): "resnet34",
    (True, 6): "resnet50",
    (True, 23): "resnet101",
}


def convert_official_state_dict(official_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename official DETR keys to this project's (``backbone.0.body.X`` -> ``backbone.body.X``,
    ``backbone.1.X`` -> ``position_encoding.X``; transformer and heads keep their names), also
    under a panoptic file's ``detr.`` prefix (the mask head's keys keep their names)."""
    out = {}
    for key, value in official_sd.items():
        prefix = DETR_PREFIX if key.startswith(DETR_PREFIX) else ""
        rest = key[len(prefix) :]
        for old, new in _PREFIXES:
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        out[prefix + rest] = value
    return out


def is_panoptic(sd: dict[str, Tensor]) -> bool:
    """Whether a state dict (official or converted) is a panoptic one (detector under
    ``detr.``)."""
    return DETR_PREFIX + CLASS_HEAD in sd


def split_panoptic(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A panoptic state dict -> (the detector's keys without ``detr.``, the mask head's keys);
    a detection state dict -> (itself, {})."""
    if not is_panoptic(sd):
        return sd, {}
    detector = {k[len(DETR_PREFIX) :]: v for k, v in sd.items() if k.startswith(DETR_PREFIX)}
    return detector, {k: v for k, v in sd.items() if not k.startswith(DETR_PREFIX)}


def _count(sd: dict[str, Tensor], prefix: str) -> int:
    """Number of numbered children under ``prefix`` (e.g. blocks of a ResNet stage)."""
    idx = {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def infer_official_config(sd: dict[str, Tensor], path: str = "<state dict>") -> dict[str, Any]:
    """``build_detr`` keyword arguments read off an official state dict's keys and shapes.

    Not recoverable from weights: the head count (default 8) and DC5 dilation. A panoptic state
    dict gives its detector's configuration.
    """
    sd = split_panoptic(sd)[0]
    blocks = _count(sd, "backbone.0.body.layer3.")
    bottleneck = "backbone.0.body.layer1.0.conv3.weight" in sd
    backbone = _RESNETS.get((bottleneck, blocks))
    if backbone is None:
        raise ValueError(
            f"{path}: cannot infer the ResNet depth: layer3 has {blocks} "
            f"{'bottleneck' if bottleneck else 'basic'} blocks (known: resnet18/34/50/101)"
        )
    ffn = [k for k in ("encoder", "decoder") if f"transformer.{k}.layers.0.linear1.weight" in sd]
    cfg: dict[str, Any] = {
        "backbone": backbone,
        "num_classes": num_classes(sd),
        "num_queries": sd["query_embed.weight"].shape[0],
        "hidden_dim": sd["query_embed.weight"].shape[1],
        "enc_layers": _count(sd, "transformer.encoder.layers."),
        "dec_layers": _count(sd, "transformer.decoder.layers."),
        "pre_norm": "transformer.encoder.norm.weight" in sd,
        "position_embedding": "learned" if "backbone.1.row_embed.weight" in sd else "sine",
        "use_ffn": bool(ffn),
    }
    if ffn:
        cfg["dim_feedforward"] = sd[f"transformer.{ffn[0]}.layers.0.linear1.weight"].shape[0]
    return cfg
