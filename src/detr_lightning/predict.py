"""Predict: ``python -m detr_lightning.predict experiment=NAME ckpt_path=PATH``.

Runs the model over the evaluation split and writes ``predictions.json`` in the run directory
(outputs/<experiment>/predict_<time>), in the COCO results format that pycocotools' ``loadRes``
reads: ``[{"image_id", "category_id" (the dataset's ids), "bbox" [x, y, w, h] in original-image
pixels, "score"}]``, every query of every image. Single process (trainer=cpu or trainer=gpu).
"""

from __future__ import annotations

import json
import os

import hydra
from omegaconf import DictConfig

from detr_lightning.utils import conf_dir


def coco_results(predictions: list[list[dict]]) -> list[dict]:
    """Lightning's per-batch ``predict_step`` outputs -> COCO results records (xywh boxes)."""
    records = []
    for batch in predictions:
        for p in batch:
            xyxy = p["boxes"].float().cpu()
            xywh = xyxy.clone()
            xywh[:, 2:] -= xyxy[:, :2]
            for box, cat, score in zip(xywh.tolist(), p["category_id"].tolist(),
                                       p["scores"].tolist(), strict=True):  # fmt: skip
                records.append({"image_id": int(p["image_id"]), "category_id": int(cat),
                                "bbox": box, "score": float(score)})  # fmt: skip
    return records


def predict(cfg: DictConfig) -> str:
    """Write predictions.json; returns its path."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt and not cfg.model.get("pretrained"):
        raise ValueError("give ckpt_path=<Lightning .ckpt> or model.pretrained=<official .pth>")
    from detr_lightning.utils.config_check import check_config

    check_config(cfg, "predict")  # also resolves ckpt_path=last, before the heavy imports
    from detr_lightning.utils.build import build_run

    datamodule, model, trainer = build_run(cfg, "predict")
    ckpt = cfg.get("ckpt_path")
    if trainer.world_size > 1:
        raise ValueError("predict runs in one process: use trainer=cpu or trainer=gpu")
    datamodule.prepare_data()
    datamodule.setup("test")
    outputs = trainer.predict(
        model, dataloaders=datamodule.test_dataloader(), ckpt_path=ckpt or None
    )
    path = os.path.join(cfg.paths.output_dir, "predictions.json")
    with open(path, "w") as f:
        json.dump(coco_results(outputs or []), f)
    print(f"predictions: {path}")
    print(f"run directory: {cfg.paths.output_dir}")
    return path


@hydra.main(config_path=conf_dir(), config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    predict(cfg)


if __name__ == "__main__":
    main()
