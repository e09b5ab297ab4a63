"""ckpt_path=last|auto outside a sweep: a warning when the run it picked was started with other
overrides (another configuration's run of the experiment), naming the differences."""

from __future__ import annotations

from detr_lightning.utils.ckpt_resolution import other_command


def _run(folder, overrides: list[str], stage: str | None = None) -> str:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    checkpoints = (folder / stage if stage else folder) / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    return str(checkpoints / "last.ckpt")


def test_a_run_of_other_overrides_is_named_with_the_differences(tmp_path) -> None:
    last = _run(tmp_path / "a", ["experiment=shapes", "seed=42", "ckpt_path=/x/last.ckpt"])
    warning = other_command("auto", last, ["experiment=shapes", "seed=5", "ckpt_path=auto"])
    assert warning is not None and warning.startswith(f"ckpt_path=auto resumes {last}")
    assert "only there ['seed=42'], only here ['seed=5']" in warning


def test_the_same_command_resumed_gives_no_warning(tmp_path) -> None:
    last = _run(tmp_path / "a", ["experiment=shapes", "seed=5", "hydra.run.dir=out/a"], "stage1_x")
    assert other_command("last", last, ["experiment=shapes", "seed=5", "ckpt_path=last"]) is None
    assert other_command("last", str(tmp_path / "b" / "checkpoints" / "last.ckpt"), []) is None


def test_a_run_started_without_overrides_is_compared_too(tmp_path) -> None:
    last = _run(tmp_path / "a", [])
    assert "only there [], only here ['seed=5']" in other_command("auto", last, ["seed=5"])
