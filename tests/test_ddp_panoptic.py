"""DDP on CPU (gloo) in panoptic mode: the 2-process evaluation (PQ, SQ, RQ, segm AP, box AP)
of a trained panoptic model equals the single-process evaluation of its checkpoint."""

from __future__ import annotations

import json

import pytest
from cli import TINY, run_cli, run_dirs

from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.evaluation.panoptic import PQ_KEYS


@pytest.mark.slow
def test_ddp_panoptic_evaluation_matches_single_process(tmp_path) -> None:
    # 5 val images in batches of 2 on 2 ranks: rank 0 evaluates [0 1] [4], rank 1 [2 3] and a
    # repeat of [0 1] (data/eval_sampler.py): 3 images against 4, masks included.
    root = generate_shapes_dataset(tmp_path / "shapes", train=8, val=5)
    common = ["experiment=shapes_panoptic", f"paths.shapes_dir={root}", *TINY,
              "data.val_batch_size=2", "model.panoptic.postprocess.threshold=0.2"]  # fmt: skip
    out = run_cli("train", ["trainer=ddp_cpu", "schedule=smoke", "stages=null", *common], tmp_path)
    assert "MEMBER: 2/2" in out, out[-3000:]
    ddp = json.loads((sorted(set(run_dirs(out)))[0] / "metrics.json").read_text())
    single_out = run_cli("eval", [f"ckpt_path={ddp['run']['checkpoint']}", *common], tmp_path)
    single = json.loads((run_dirs(single_out)[0] / "metrics.json").read_text())
    keys = [*PQ_KEYS, "segm_AP", "segm_AP50", "AP", "AP50"]
    assert {k: ddp[k] for k in keys} == {k: single[k] for k in keys}
