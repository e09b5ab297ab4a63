"""``<group>=null`` is refused with the ``~<group>`` fix before Hydra parses it (Hydra's own
error is a traceback that names neither); other nulls pass to Hydra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from detr_lightning.utils.null_group_choice import message, null_group_choices


def test_only_a_groups_null_choice_is_found(tmp_path) -> None:
    for group in ("refine", "denoiser", "proposal_head"):
        (tmp_path / group).mkdir()
    args = ["refine=null", "+denoiser=dn,null", "proposal_head@model.net.queries.head=null",
            "refine=boxes", "data.batch_size=null", "model.net.queries.class_prior=null",
            "~refine", "denoiser=dn,other", "nullable=null"]  # fmt: skip
    assert null_group_choices(args, str(tmp_path)) == args[:3]


def test_the_message_names_the_deletion_and_in_a_sweep_a_command_of_its_own() -> None:
    assert message("refine=null") == (
        "refine=null: Hydra leaves a config group out with '~refine', not refine=null"
    )
    assert "run '~denoiser' (without it) as a command of its own" in message("+denoiser=dn,null")


@pytest.mark.parametrize("entry", ["train", "eval", "predict", "visualize", "export"])
def test_every_entry_point_refuses_it_before_hydra_runs(entry: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"detr_lightning.{entry}", "experiment=shapes", "refine=null"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == message("refine=null")
    assert "Traceback" not in proc.stderr
