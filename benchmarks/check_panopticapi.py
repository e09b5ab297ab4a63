"""Our ``evaluation.panoptic.pq_compute`` against COCO panopticapi's on random panoptic cases.

Needs a local checkout of cocodataset/panopticapi (imported from that path, never vendored):
``python benchmarks/check_panopticapi.py --panopticapi PATH [--cases 200] [--seed 0]`` or
``PANOPTICAPI=PATH make bench``; without one it says so and exits 0. Each case (1-3 images,
8-40 px a side) is written in panopticapi's layout (gt/pred json + RGB id PNGs): ground truth
of stuff bands (one segment per category), thing boxes (some ``iscrowd=1``) and VOID pixels;
predictions perturb it (kept, shifted, eroded, dilated, split, merged, relabelled, dropped,
exactly half a segment = IoU 0.5) and add extras, some on VOID or crowd pixels (some exactly
half on them). Every case goes through panopticapi's ``pq_compute_single_core`` + ``pq_average``
and ours; all cases pooled go through its multi-process ``pq_compute``. Exits 1 when any number
(All/Things/Stuff PQ SQ RQ n, per-class PQ SQ RQ) differs by more than 1e-9.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detr_lightning.evaluation.panoptic import pq_compute

THINGS, STUFF = [1, 3, 7, 12], [50, 51, 90]
CATEGORIES = [{"id": c, "name": f"c{c}", "isthing": int(c in THINGS)} for c in THINGS + STUFF]
OPS = ["keep", "shift", "erode", "dilate", "split", "merge", "relabel", "drop", "half"]
TOL = 1e-9


def box(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = rng.integers(0, h), rng.integers(0, w)
    mask = np.zeros((h, w), bool)
    mask[y : y + rng.integers(2, h // 2 + 3), x : x + rng.integers(2, w // 2 + 3)] = True
    return mask


def random_ids(rng: np.random.Generator, ids: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Renumber the segments of ``ids`` to random ids in [1, 256**3) (all three RGB bytes)."""
    keys, inverse = np.unique(ids, return_inverse=True)
    new = np.where(keys == 0, 0, rng.choice(256**3 - 1, len(keys), replace=False) + 1)
    return new[inverse].reshape(ids.shape), dict(zip(keys.tolist(), new.tolist(), strict=True))


def gt_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[dict]]:
    """Stuff bands, thing boxes painted over them (20% crowd), VOID boxes and noise."""
    while True:
        ids, cats, crowd = np.zeros((h, w), np.int64), {}, {}
        band = np.sort(rng.integers(0, 3, w))  # 1-3 vertical bands
        for i, cat in enumerate(rng.choice(STUFF, 3, replace=False)):
            ids[:, band == i], cats[i + 1] = i + 1, int(cat)
        for k in range(4, 4 + rng.integers(1, 7)):
            ids[box(rng, h, w)], cats[k] = k, int(rng.choice(THINGS))
            crowd[k] = int(rng.random() < 0.2)
        for _ in range(rng.integers(0, 3)):
            ids[box(rng, h, w)] = 0
        ids[rng.random((h, w)) < 0.03] = 0
        present = [int(k) for k in np.unique(ids) if k]
        if any(k > 3 and not crowd[k] for k in present) and any(k <= 3 for k in present):
            break
    ids, new = random_ids(rng, ids)
    segs = [{"id": new[k], "category_id": cats[k], "iscrowd": crowd.get(k, 0),
             "area": int((ids == new[k]).sum())} for k in present]  # fmt: skip
    return ids, segs


def pred_image(rng: np.random.Generator, gt: np.ndarray, segs: list[dict], ops: Counter) -> tuple:
    """Perturbed ground truth plus extras; stuff of one category merged into one segment."""
    pieces: list[tuple[np.ndarray, int]] = []
    for seg in rng.permutation(np.array(segs, dtype=object)):
        mask, cat, op = gt == seg["id"], seg["category_id"], str(rng.choice(OPS))
        ops[op] += 1
        near = [np.roll(mask, s, a) for s in (-1, 1) for a in (0, 1)]
        if op == "shift":
            mask = np.roll(mask, tuple(rng.integers(-3, 4, 2)), (0, 1))
        elif op in ("erode", "dilate"):
            mask = np.all([mask, *near], 0) if op == "erode" else np.any([mask, *near], 0)
        elif op == "split":
            cut = np.arange(mask.shape[1]) < rng.integers(0, mask.shape[1])
            pieces.append((mask & cut, cat))
            mask = mask & ~cut
        elif op == "merge":
            mask = mask | (gt == rng.choice(segs)["id"])
        elif op == "relabel":
            cat = int(rng.choice(THINGS + STUFF))
        elif op == "half":  # the first half of its pixels: IoU exactly 0.5 when even
            flat = np.flatnonzero(mask)
            mask = np.isin(np.arange(mask.size), flat[: len(flat) // 2]).reshape(mask.shape)
        if op != "drop":
            pieces.append((mask, cat))
    for _ in range(rng.integers(0, 4)):  # extras: anywhere, on VOID or crowd, or half on them
        base = [gt == 0] + [gt == s["id"] for s in segs if s["iscrowd"]]
        k = int(rng.integers(0, len(base)))
        cat = [s["category_id"] for s in segs if s["iscrowd"]][k - 1] if k else None
        on = np.flatnonzero(base[k] & box(rng, *gt.shape))
        off = rng.permutation(np.flatnonzero(~base[k] & (gt != 0)))[: len(on) * rng.integers(0, 2)]
        mask = np.isin(np.arange(gt.size), np.r_[on, off]).reshape(gt.shape)
        pieces.append((box(rng, *gt.shape) if rng.random() < 0.3 else mask,
                       cat or int(rng.choice(THINGS + STUFF))))  # fmt: skip
    pred, cats = np.zeros_like(gt), {}
    for i, (mask, cat) in enumerate(pieces, 1):
        stuff_id = next((j for j, c in cats.items() if c == cat and cat in STUFF), i)
        pred[mask], cats[stuff_id] = stuff_id, cat
    present = [int(k) for k in np.unique(pred) if k]
    pred, new = random_ids(rng, pred)
    return pred, [{"id": new[k], "category_id": cats[k]} for k in present]


def write_png(path: Path, ids: np.ndarray) -> None:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def official(api: Any, gt_json: Path, pred_json: Path, folders: tuple[Path, Path]) -> tuple:
    """panopticapi's per-core matching and ``pq_average``, as its ``pq_compute`` runs them."""
    gt, pred = (json.loads(p.read_text()) for p in (gt_json, pred_json))
    categories = {c["id"]: c for c in gt["categories"]}
    preds = {a["image_id"]: a for a in pred["annotations"]}
    pairs = [(a, preds[a["image_id"]]) for a in gt["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        stat = api.pq_compute_single_core(0, pairs, *map(str, folders), categories)
    results: dict[str, Any] = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = stat.pq_average(categories, isthing)
        results.setdefault("per_class", per_class)
    return results, stat


def differences(ours: dict, theirs: dict) -> dict[tuple, tuple[float, float]]:
    """Every number of both result dicts (a missing one is inf), named "Things pq", "class 7 sq"."""
    flat = [{f"{g} {m}" if k is None else f"class {k} {m}": float(v) for g in ("All", "Things", "Stuff", "per_class") for k, d in
             (r[g].items() if g == "per_class" else [(None, r[g])]) for m, v in d.items()}
            for r in (ours, theirs)]  # fmt: skip
    keys = sorted(flat[0].keys() | flat[1].keys())
    return {k: (flat[0].get(k, np.inf), flat[1].get(k, np.inf)) for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panopticapi", default=os.environ.get("PANOPTICAPI"))
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="write the cases here instead of a temporary folder")
    args = parser.parse_args()
    if not args.panopticapi or not Path(args.panopticapi, "panopticapi/evaluation.py").is_file():
        print("[panopticapi] skipped: set PANOPTICAPI to a checkout of cocodataset/panopticapi "
              "(git clone https://github.com/cocodataset/panopticapi /tmp/panopticapi; "
              "PANOPTICAPI=/tmp/panopticapi make bench)")  # fmt: skip
        return 0
    sys.path.insert(0, args.panopticapi)
    import panopticapi.evaluation as api

    rng, ops, tally = np.random.default_rng(args.seed), Counter(), Counter()
    root = Path(args.keep or tempfile.mkdtemp(prefix="pqcheck_"))
    folders = root / "gt", root / "pred"
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    anns: list[tuple[list, list]] = []
    for _ in range(args.cases):
        gts, preds = [], []
        for _ in range(rng.integers(1, 4)):
            image_id, (h, w) = len(anns) * 10 + len(gts), rng.integers(8, 41, 2)
            gt_ids, gt_segs = gt_image(rng, h, w)
            pred_ids, pred_segs = pred_image(rng, gt_ids, gt_segs, ops)
            name = f"{image_id:06d}.png"
            write_png(folders[0] / name, gt_ids)
            write_png(folders[1] / name, pred_ids)
            gts.append({"image_id": image_id, "file_name": name, "segments_info": gt_segs})
            preds.append({"image_id": image_id, "file_name": name, "segments_info": pred_segs})
            tally["images"] += 1
            tally["gt segments"] += len(gt_segs)
            tally["crowd"] += sum(s["iscrowd"] for s in gt_segs)
            tally["pred segments"] += len(pred_segs)
            tally["VOID px"] += int((gt_ids == 0).sum())
            tally["px"] += gt_ids.size
        anns.append((gts, preds))
    worst, failing = (0.0, "-"), []
    pooled = ([g for a in anns for g in a[0]], [p for a in anns for p in a[1]])
    for case, (gts, preds) in enumerate([*anns, pooled]):
        tag = "all" if case == len(anns) else f"{case:03d}"
        paths = root / f"gt_{tag}.json", root / f"pred_{tag}.json"
        paths[0].write_text(json.dumps({"annotations": gts, "categories": CATEGORIES}))
        paths[1].write_text(json.dumps({"annotations": preds}))
        ours = pq_compute(*paths, *folders)
        if tag == "all":  # the pooled set through panopticapi's own multi-process entry point
            with contextlib.redirect_stdout(io.StringIO()):
                theirs = api.pq_compute(*map(str, paths), *map(str, folders))
        else:
            theirs, stat = official(api, *paths, folders)
            for c in stat.pq_per_cat.values():
                tally.update(tp=c.tp, fp=c.fp, fn=c.fn)
        diffs = {k: (a, b) for k, (a, b) in differences(ours, theirs).items() if a != b}
        diff = max((abs(a - b) for a, b in diffs.values()), default=0.0)
        worst = max(worst, (diff, tag))
        if diff > TOL:
            size = sum(len(g["segments_info"]) for g in gts)
            failing.append((size, tag, gts, preds))
            print(f"case {tag} differs (ours, panopticapi): "
                  + ", ".join(f"{k}: {a:.6g} vs {b:.6g}" for k, (a, b) in list(diffs.items())[:6]))  # fmt: skip
    tally["ignored preds"] = tally["pred segments"] - tally["tp"] - tally["fp"]
    print(
        f"{args.cases} cases, seed {args.seed}: {', '.join(f'{k} {v}' for k, v in tally.items())}"
    )
    print(f"prediction ops: {', '.join(f'{k} {v}' for k, v in sorted(ops.items()))}")
    print(f"pooled ({tally['images']} images) | ours: PQ SQ RQ n | panopticapi: PQ SQ RQ n")
    for name in ("All", "Things", "Stuff"):
        row = [f"{r[name][k]:.6f}" for r in (ours, theirs) for k in ("pq", "sq", "rq")]
        print(f"{name:6s} | {' '.join(row[:3])} {ours[name]['n']} | {' '.join(row[3:])} "
              f"{theirs[name]['n']}")  # fmt: skip
    print(f"max |ours - panopticapi| over every number (All/Things/Stuff PQ SQ RQ n, per-class "
          f"PQ SQ RQ) of every case: {worst[0]:.3g} (case {worst[1]}); tolerance {TOL:g}")  # fmt: skip
    if failing:
        _, tag, gts, preds = min(failing, key=lambda f: f[0])
        print(f"{len(failing)} case(s) differ; smallest: case {tag} (rerun with --keep DIR for "
              f"its PNGs)\n  gt:   {gts}\n  pred: {preds}")  # fmt: skip
    if not args.keep:
        shutil.rmtree(root)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
