"""What a finished test leaves: metrics.json and the tables on rank 0, nothing from the other
ranks (every DDP process runs the test and reaches the report)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from omegaconf import OmegaConf

from detr_lightning.evaluation.run_report import report


def _trainer(rank_zero: bool) -> SimpleNamespace:
    module = SimpleNamespace(test_per_class={}, hparams={})  # a test with no category evaluated
    return SimpleNamespace(is_global_zero=rank_zero, lightning_module=module, datamodule=None)


def test_rank_zero_writes_metrics_json_and_the_other_ranks_nothing(tmp_path, capsys) -> None:
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}, "experiment_name": "x"})
    metrics = {"AP": 0.5, "AP50": 0.75}
    assert report(_trainer(False), cfg, metrics, checkpoint="c.ckpt") is None
    assert not (tmp_path / "run").exists() and capsys.readouterr().out == ""
    path = report(_trainer(True), cfg, metrics, checkpoint="c.ckpt")
    assert path == str(tmp_path / "run" / "metrics.json")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["AP"] == 0.5 and written["run"]["checkpoint"] == "c.ckpt"
    printed = capsys.readouterr().out
    assert "COCO bbox evaluation (x)" in printed and f"run directory: {tmp_path / 'run'}" in printed
    assert "Panoptic quality" not in printed  # no PQ key: a detector


def test_a_panoptic_test_prints_the_segm_ap_of_things_under_their_own_title(
    tmp_path, capsys
) -> None:
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "experiment_name": "p"})
    metrics = {"AP": 0.5, "segm_AP": 0.25, "segm_AP50": 0.375, "PQ": 0.125}
    report(_trainer(True), cfg, metrics)
    printed = capsys.readouterr().out
    segm = printed.split("COCO segm evaluation (thing classes)\n")[1].split("\nPanoptic quality")[0]
    assert [line.split()[-2:] for line in segm.splitlines()] == [["0.250", "AP"],
                                                                 ["0.375", "AP50"]]  # fmt: skip
    assert "Panoptic quality (p)" in printed and "12.5" in printed  # PQ x 100
