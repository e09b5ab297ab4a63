"""pycocotools' COCOeval as the reference for AP numbers."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def pycocotools_stats(ann: str, dets: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann)
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def fake_detections(coco: COCO, seed: int = 0) -> list[dict]:
    """Jittered ground truth (some with the wrong class) plus random false positives."""
    rng = np.random.default_rng(seed)
    cats = coco.getCatIds()
    dets = []
    for img in coco.dataset["images"]:
        w, h = img["width"], img["height"]
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            if rng.random() < 0.15:
                continue
            scale = np.array(a["bbox"][2:] * 2)
            x, y, bw, bh = np.array(a["bbox"]) + rng.normal(0, 0.08, 4) * scale
            cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
            dets.append({"image_id": img["id"], "category_id": cat, "score": rng.random(),
                         "bbox": [float(x), float(y), float(max(bw, 1)), float(max(bh, 1))]})  # fmt: skip
        for _ in range(rng.integers(0, 4)):
            bw, bh = rng.uniform(5, w / 2), rng.uniform(5, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cats)),
                         "score": rng.random() * 0.7, "bbox": [x, y, bw, bh]})  # fmt: skip
    for d in dets:  # what a float32 model output would hold
        d["bbox"] = np.float32(d["bbox"]).astype(float).tolist()
        d["score"] = float(np.float32(d["score"]))
    return dets
