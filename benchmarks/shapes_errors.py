"""What a trained detector gets wrong on the val split: boxes or classes (figures, not assertions).

For every ground-truth object of the val split, with the model's final outputs:

* ``found@0.5`` / ``found@0.75``: some output box (any class, any score) overlaps it at IoU
  above 0.5 / 0.75 — localisation and recall, independent of classification;
* ``class ok``: among the output boxes above IoU 0.5, the highest-scoring one has its class —
  what the score ranking, and so AP, sees;
* ``duplicates``: more than one box above IoU 0.5 scores above 0.3.

Each is printed as a share of all the val objects, ``class ok`` also as a share of the objects
found at IoU 0.5 (the only ones that can have it), which is what the by-size rows give.

With box refinement (``refine=boxes``) it also prints the mean IoU of the outputs matched one
to one (Hungarian, by IoU) to the objects at the decoder's reference boxes and after every
decoder layer: whether the decoder moves its boxes towards the objects. A confusion matrix
(rows: true class, columns: the class of the best box above IoU 0.5) ends the report, after the
same figures by COCO size class of the box in input pixels (small < 32², large > 96²): found@0.5,
class ok among the found, and the last layer's matched IoU. ``score~IoU`` is the rank
correlation (Spearman) of the score with the IoU over each found object's highest-scoring box
above IoU 0.5, where its class is right: whether a tighter box scores higher, which AP75 rewards
(``cls_loss=varifocal`` trains for it). The IoU-matched outputs would not tell: most of them are
low-scoring duplicates.

Run: ``python benchmarks/shapes_errors.py CKPT [hydra overrides of the run, e.g. experiment=shapes]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from detr_lightning.checkpointing.read import read_checkpoint
from detr_lightning.detr.class_scoring import scoring_of
from detr_lightning.utils.build import build_datamodule, build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shapes_profile import compose_shapes  # noqa: E402

SIZE_FIGURES = ("found@0.5", "class ok", "mean IoU")


def size_class(area: float) -> str:
    """COCO's size class of an area in pixels (small < 32², large > 96²)."""
    return "small" if area < 32**2 else "medium" if area <= 96**2 else "large"


def layer_boxes(out: dict, reference: Tensor | None) -> dict[str, Tensor]:
    """[B, Q, 4] cxcywh boxes by stage: the reference (if any), every decoder layer's output."""
    stages = {} if reference is None else {"reference": reference}
    aux = out.get("aux_outputs", [])
    for i, layer in enumerate(aux):
        stages[f"layer {i}"] = layer["pred_boxes"]
    stages[f"layer {len(aux)}"] = out["pred_boxes"]
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt")
    args, overrides = parser.parse_known_args()
    cfg = compose_shapes(overrides)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    lit = build_model(cfg, datamodule)
    lit.load_state_dict(read_checkpoint(args.ckpt)["state_dict"])
    net = lit.net.eval()
    scoring = scoring_of(net)
    captured: dict[str, Tensor] = {}
    if getattr(net, "box_refinement", None) is not None:  # the queries carry reference boxes
        net.queries.register_forward_hook(lambda m, a, o: captured.__setitem__("ref", o.reference))
    counts: dict[str, float] = defaultdict(float)
    ious: dict[str, list[Tensor]] = defaultdict(list)
    confusion: dict[tuple[int, int], int] = defaultdict(int)
    by_size: dict[tuple[str, str], list[float]] = defaultdict(list)
    score_iou: list[tuple[float, float]] = []
    for batch in datamodule.val_dataloader():
        with torch.no_grad():
            out = net(batch.pixel_values, batch.pixel_mask)
        probs = scoring.probabilities(out["pred_logits"])
        scores, labels = probs.max(-1)
        stages = layer_boxes(out, captured.get("ref"))
        for b, target in enumerate(batch.targets):
            gt, gt_labels = box_convert(target["boxes"], "cxcywh", "xyxy"), target["labels"]
            if len(gt) == 0:
                continue
            iou = box_iou(box_convert(out["pred_boxes"][b], "cxcywh", "xyxy"), gt)  # [Q, G]
            counts["objects"] += len(gt)
            height, width = target["size"].tolist()
            sizes = [size_class(a) for a in (target["boxes"][:, 2:].prod(1) * height * width)]
            best_iou = iou.max(0).values  # [G]
            counts["found@0.5"] += (best_iou > 0.5).sum().item()
            counts["found@0.75"] += (best_iou > 0.75).sum().item()
            for g in range(len(gt)):
                over = iou[:, g] > 0.5
                by_size[("found@0.5", sizes[g])].append(float(over.any()))
                if not over.any():
                    continue
                best = torch.where(over, scores[b], torch.full_like(scores[b], -1.0)).argmax()
                class_ok = int(labels[b, best] == gt_labels[g])
                if class_ok:
                    score_iou.append((scores[b, best].item(), iou[best, g].item()))
                counts["class ok"] += class_ok
                by_size[("class ok", sizes[g])].append(float(class_ok))
                counts["duplicates"] += int((over & (scores[b] > 0.3)).sum() > 1)
                confusion[(int(gt_labels[g]), int(labels[b, best]))] += 1
            rows, cols = linear_sum_assignment((-iou).numpy())
            for g, value in zip(cols, iou[rows, cols].tolist(), strict=True):
                by_size[("mean IoU", sizes[g])].append(value)
            for name, boxes in stages.items():
                matched = box_convert(boxes[b][rows], "cxcywh", "xyxy")
                ious[name].append(box_iou(matched, gt[cols]).diagonal())
    n = counts.pop("objects")
    print(f"{args.ckpt}: {int(n)} val objects")
    for key, value in counts.items():
        print(f"  {key + ' (of all objects)':30s} {value / n:.3f}")
    of_found = counts["class ok"] / max(counts["found@0.5"], 1)
    print(f"  {'class ok (of the found@0.5)':30s} {of_found:.3f}")
    matched_scores, matched_ious = zip(*score_iou, strict=True)
    print(f"  {'score~IoU':30s} {spearmanr(matched_scores, matched_ious).statistic:.3f}")
    if len(ious) > 1:
        print("  mean IoU of the outputs matched to the objects (Hungarian, by IoU):")
        for name, values in ious.items():
            print(f"    {name:10s} {torch.cat(values).mean():.3f}")
    print("  by size (objects; found@0.5, class ok among the found, matched IoU of the outputs):")
    for name in ("small", "medium", "large"):
        found = by_size[("found@0.5", name)]
        figures = [sum(v) / max(len(v), 1) for v in (by_size[(k, name)] for k in SIZE_FIGURES)]
        print(f"    {name:7s} {len(found):5d}  " + "  ".join(f"{f:.3f}" for f in figures))
    size = len(datamodule.label_to_category_id)
    print("  confusion (rows: true class, columns: class of the best box above IoU 0.5):")
    for t in range(size):
        print("    " + " ".join(f"{confusion[(t, p)]:5d}" for p in range(size)))


if __name__ == "__main__":
    main()
