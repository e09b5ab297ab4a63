"""source_key: the key a copied value is set by, through plain references only."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from detr_lightning.utils.source_keys import source_key

CFG = OmegaConf.create(
    {
        "top": "${data.val}",
        "data": {
            "val": "/d/val",
            "test": "${.val}",  # beside it
            "up": "${..top}",  # one level up, then on to data.val
            "absolute": "${data.test}",
            "built": "${.val}/sub",  # a value of its own around a reference
            "env": "${oc.env:HOME}",  # a resolver, no key
            "dangling": "${.nothing}",
            "loop_a": "${.loop_b}",
            "loop_b": "${.loop_a}",
            "missing": "???",
        },
    }
)


@pytest.mark.parametrize(
    ("key", "expected"),
    [("data.val", "data.val"), ("data.test", "data.val"), ("data.up", "data.val"),
     ("data.absolute", "data.val"), ("top", "data.val"), ("data.built", "data.built"),
     ("data.env", "data.env"), ("data.dangling", "data.dangling"),
     ("data.missing", "data.missing")],
)  # fmt: skip
def test_the_key_a_value_is_set_by(key: str, expected: str) -> None:
    assert source_key(CFG, key) == expected


def test_a_loop_of_references_ends_at_one_of_its_keys() -> None:
    assert source_key(CFG, "data.loop_a") == "data.loop_b"
