"""LitDETR in panoptic mode (head=panoptic): PQ / SQ / RQ, segm AP and box AP every validation,
in the test metrics, in metrics.json and in the printed tables; detection mode unchanged."""

from __future__ import annotations

import json

import pytest
from lit import quiet_trainer, tiny_lit
from omegaconf import OmegaConf
from panoptic_support import panoptic_datamodule, shapes_panoptic, tiny_panoptic_lit

from detr_lightning.convergence.model import ConvergenceDETR
from detr_lightning.detr.segmentation import DETRsegm
from detr_lightning.evaluation.panoptic import PQ_KEYS
from detr_lightning.evaluation.run_report import report

SEGM_KEYS = ("segm_AP", "segm_AP50", "segm_AP75", "segm_AR_100")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return shapes_panoptic(tmp_path_factory.mktemp("panoptic"), train=4, val=3)


def val_categories(root) -> list[dict]:
    """The panoptic json's categories (what the evaluation scores)."""
    return json.loads((root / "annotations" / "panoptic_val.json").read_text())["categories"]


@pytest.mark.parametrize("cls", [None, ConvergenceDETR], ids=["DETR", "ConvergenceDETR"])
def test_panoptic_validation_logs_pq_and_metrics_json_has_it(
    cls, shapes_root, tmp_path, capsys
) -> None:
    lit = tiny_panoptic_lit() if cls is None else tiny_panoptic_lit(cls)
    assert isinstance(lit.net, DETRsegm)
    trainer = quiet_trainer(tmp_path, max_epochs=1)  # 2 steps, then a validation
    trainer.fit(lit, datamodule=panoptic_datamodule(shapes_root))
    logged = trainer.callback_metrics
    assert {"train/loss_mask", "train/loss_dice"} <= set(logged)  # every step, as loss_ce
    for key in (*PQ_KEYS, *SEGM_KEYS, "AP", "AP50"):
        assert f"val/{key}" in logged, key
        # -1: undefined, as pycocotools (an untrained model may predict no thing at all)
        assert -1.0 <= float(logged[f"val/{key}"]) <= 1.0
    trainer.test(lit, datamodule=panoptic_datamodule(shapes_root), verbose=False)
    metrics = lit.test_metrics
    assert set(PQ_KEYS) | set(SEGM_KEYS) | {"AP"} <= set(metrics)
    assert metrics["PQ"] <= metrics["SQ"] and metrics["PQ"] <= metrics["RQ"]
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")},
                            "experiment_name": "tiny_panoptic"})  # fmt: skip
    path = report(trainer, cfg, metrics, checkpoint="final weights")
    saved = json.loads(open(path).read())
    assert {k: saved[k] for k in PQ_KEYS} == pytest.approx({k: metrics[k] for k in PQ_KEYS})
    # PQ per category: its defined entries' means are the summary PQ, PQ_th and PQ_st
    per_category = json.loads((tmp_path / "run" / "metrics_per_category.json").read_text())
    pq = per_category["panoptic"]
    assert {r["category_id"] for r in pq} == {c["id"] for c in val_categories(shapes_root)}
    for key, kinds in (("PQ", (True, False)), ("PQ_th", (True,)), ("PQ_st", (False,))):
        defined = [r["PQ"] for r in pq if r["PQ"] >= 0 and r["isthing"] in kinds]
        expected = sum(defined) / len(defined) if defined else 0.0
        assert metrics[key] == pytest.approx(expected, abs=1e-6), key
    assert all(r["PQ"] == -1 for r in pq if r["tp"] + r["fp"] + r["fn"] == 0)
    # and each category's AP and PQ reached the loggers, named
    logged = trainer.callback_metrics
    for metric, rows in (("AP", per_category["bbox"]), ("PQ", pq)):
        for r in rows:
            assert float(logged[f"test_per_category/{metric}-{r['name']}"]) == pytest.approx(
                r[metric]
            )
    printed = capsys.readouterr().out
    assert "COCO bbox evaluation" in printed and "COCO segm evaluation (thing classes)" in printed
    assert "PQ per category" in printed
    for row in ("All", "Things", "Stuff"):
        assert f"\n{row:10}|" in printed


def test_detection_mode_is_unchanged(tmp_path) -> None:
    # No segmentation, no evaluator: no PQ key, the detector as net.
    lit = tiny_lit()
    assert lit.val_panoptic is None and lit.test_panoptic is None
    assert not isinstance(lit.net, DETRsegm)
