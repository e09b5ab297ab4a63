"""Predict: ``python -m detr_lightning.predict ckpt_path=PATH [input=IMAGE_OR_DIR]
[output_dir=DIR]`` (``make predict CKPT=... INPUT=...``; Hydra overrides as the other entry
points).

Weights: ``ckpt_path`` (a Lightning checkpoint; compose the experiment and overrides of its
training run) or ``model.pretrained`` (an official DETR .pth, e.g. ``experiment=r50
model.pretrained=detr-r50-e632da11.pth``: no ImageNet weights and no COCO files are read), or
``backend=onnxruntime onnx=MODEL.onnx`` (written by ``detr_lightning.export``).

Images: ``input=`` one image, or a folder (recursively, through linked folders, leaving out
hidden ones, earlier run directories and ``output_dir``; jpg, png, bmp, webp, tif, ...); without
it, the data config's evaluation split (its COCO json's ids). Images that cannot be read are
reported by name and skipped; when none can be read, predict fails with the list. Writes into
``output_dir``, the run directory (default outputs/<experiment>/predict_<time>; ``output_dir=DIR``
on the command line makes DIR the run directory, log and ``.hydra/`` included):

* ``predictions.json``: COCO results (``image_id``, ``category_id`` = the dataset's original id,
  ``bbox`` [x, y, w, h] in original pixels, ``score``, and ``category_name`` when the checkpoint
  knows it), every detection the post-processing keeps (``model.postprocess.*``);
* ``images.json``: the predicted images and categories as a COCO file without annotations, so
  ``COCO("images.json").loadRes("predictions.json")`` works for any folder;
* ``drawn/<image>.png``: each image with its boxes, class names and scores
  (``draw.score_threshold``, ``draw.top_k``; ``draw.enabled=false`` writes none); inputs that
  differ only in their suffix keep it (``x.jpg``, ``x.png`` -> ``x.jpg.png``, ``x.png.png``);
* a panoptic model (``head=panoptic``, or its ONNX export): ``panoptic.json`` and
  ``panoptic/<image>.png`` in COCO's panoptic format
  (:mod:`detr_lightning.inference.panoptic_output`), segments as ``model.panoptic.postprocess``
  says (threshold, min_area: the run's, else those recorded in the .onnx).
"""

from __future__ import annotations

import json
import logging
import os

import hydra
from omegaconf import DictConfig, OmegaConf

from detr_lightning.predict_outputs import refuse_earlier_outputs, refuse_given_output_dir
from detr_lightning.utils import absolute_path, claim_run_dirs_for_jobs_only, conf_dir
from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.job_errors import exit_on_explained_errors
from detr_lightning.utils.null_group_choice import refuse_null_group_choices

log = logging.getLogger(__name__)
BACKENDS = ("torch", "onnxruntime")


def _records(cfg: DictConfig, out_dir: str) -> tuple[list, object | None]:
    """The images and, for the evaluation split, the datamodule (its label map); ``out_dir``
    is left out of an input folder holding it."""
    from detr_lightning.inference.image_search import find_images
    from detr_lightning.inference.images import coco_split_images

    if cfg.get("input"):
        return find_images(cfg.input, out_dir), None
    from detr_lightning.utils.build import build_datamodule

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()  # generates the shapes data on first use
    images, ann = datamodule.paths["test"]
    if images is None or ann is None:
        images, ann = datamodule.paths["val"]
    return coco_split_images(images, ann), datamodule


def check_weights(cfg: DictConfig, backend: str) -> None:
    """The weights ``backend`` reads must be given, and no others: weights given to the backend
    that does not read them would be ignored without a word (``onnx=`` under ``backend=torch``:
    the checkpoint predicts, not the .onnx one meant to check; ``ckpt_path`` /
    ``model.pretrained`` under ``backend=onnxruntime``: the .onnx holds its own weights)."""
    if backend == "torch" and not cfg.get("ckpt_path") and not cfg.model.get("pretrained"):
        raise ConfigError(
            "give ckpt_path=<Lightning .ckpt> or model.pretrained=<official .pth> "
            "(or backend=onnxruntime onnx=<exported .onnx>)"
        )
    if backend == "onnxruntime" and not cfg.get("onnx"):
        raise ConfigError("backend=onnxruntime needs onnx=<file written by detr_lightning.export>")
    if backend == "torch" and cfg.get("onnx"):
        raise ConfigError(
            f"onnx={cfg.onnx} is read by backend=onnxruntime only; backend=torch would predict "
            "with ckpt_path / model.pretrained and ignore it. Fix: add backend=onnxruntime (and "
            "drop ckpt_path / model.pretrained), or drop onnx="
        )
    unused = [f"{key}={value}" for key, value in
              (("ckpt_path", cfg.get("ckpt_path")),
               ("model.pretrained", OmegaConf.select(cfg, "model.pretrained")))
              if value]  # fmt: skip
    if backend == "onnxruntime" and unused:
        raise ConfigError(
            f"backend=onnxruntime runs onnx={cfg.onnx} with the weights inside it and does not "
            f"read {', '.join(unused)}. Fix: drop {' and '.join(k.split('=')[0] for k in unused)} "
            "(or export that checkpoint and give its .onnx), or use backend=torch without onnx="
        )


def predict(cfg: DictConfig) -> str:
    """Predict, write predictions.json, images.json and the drawings; returns the json's path."""
    backend = cfg.get("backend", "torch")
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend}: use one of {', '.join(BACKENDS)}")
    check_weights(cfg, backend)
    from detr_lightning.inference.device import resolve_device
    from detr_lightning.inference.loading import check_inference_config

    # every malformed value at once, then whether the device is there: both before the
    # evaluation split or the input folder is read (minutes on COCO), not once the model moves
    check_inference_config(cfg, needs_data=not cfg.get("input"), needs_weights=backend == "torch")
    if backend == "torch":
        device = resolve_device(cfg.get("device"))
    else:
        from detr_lightning.inference.onnx_runtime import onnx_providers

        providers = onnx_providers(cfg.get("device"))
    out_dir = cfg.get("output_dir") or cfg.paths.output_dir
    refuse_earlier_outputs(out_dir)  # the default folder, or a sweep's jobs sharing one

    import torch
    from hydra.utils import instantiate

    from detr_lightning.inference.backends import onnx_backend, torch_backend
    from detr_lightning.inference.results import images_json
    from detr_lightning.inference.runner import DrawOptions, run_predictions

    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    records, datamodule = _records(cfg, out_dir)
    folder = os.path.join(out_dir, "panoptic")
    run = (torch_backend(cfg, datamodule, device, folder) if backend == "torch"
           else onnx_backend(cfg, providers, folder))  # fmt: skip
    ids, names, panoptic = run.category_ids, run.names, run.panoptic
    os.makedirs(out_dir, exist_ok=True)
    result = run_predictions(
        run.forward, run.postprocess, records, instantiate(cfg.data.val_transforms), ids, names,
        draw_dir=os.path.join(out_dir, "drawn"), draw=DrawOptions(**cfg.get("draw", {})),
        batch_size=int(cfg.get("batch_size", 4)), num_workers=int(cfg.get("num_workers", 0)),
        device=run.device, progress=bool(cfg.get("progress", True)), scoring=run.scoring,
        panoptic=panoptic, exif_transpose=bool(cfg.data.get("exif_transpose", True)),
        pad_to_multiple=cfg.data.get("pad_to_multiple"),
    )  # fmt: skip
    if result.skipped and not result.images:
        from detr_lightning.inference.images import unreadable_error

        source = f"input={cfg.input}" if cfg.get("input") else "the evaluation split"
        raise unreadable_error(result.skipped, source)
    # whole files or none: a predict killed (or failing) mid-write leaves no truncated json
    from detr_lightning.checkpointing.atomic_io import atomic_write_text

    path = os.path.join(out_dir, "predictions.json")
    atomic_write_text(path, json.dumps(result.records))
    given = cfg.get("input")  # images.json's file_names are relative to it
    info = {"weights": absolute_path(run.source),
            "input": absolute_path(str(given)) if given else "evaluation split"}  # fmt: skip
    images = images_json(result.images, ids, names, **info)
    atomic_write_text(os.path.join(out_dir, "images.json"), json.dumps(images))
    print(f"predicted {len(result.images)} images ({len(result.records)} detections)")
    if result.skipped:
        listing = "\n  ".join(str(rec.path) for rec, _ in result.skipped)
        print(f"skipped {len(result.skipped)} unreadable image(s):\n  {listing}")
    if result.drawn:
        print(f"drawings: {os.path.join(out_dir, 'drawn')}")
    if panoptic is not None:
        written = panoptic.write_json(os.path.join(out_dir, "panoptic.json"))
        print(f"panoptic segmentation: {written} (PNGs in {panoptic.folder})")
    print(f"predictions: {path}")
    print(f"run directory: {cfg.paths.output_dir}")
    return path


@refuse_null_group_choices(conf_dir())
@claim_run_dirs_for_jobs_only
@hydra.main(config_path=conf_dir(), config_name="predict", version_base="1.3")
@exit_on_explained_errors
def _main(cfg: DictConfig) -> None:
    """Hydra entry point: refuses training-only overrides first (they would be ignored)."""
    from detr_lightning.utils.unread_overrides import refuse_unread_overrides

    refuse_unread_overrides("predict")
    predict(cfg)


def main() -> None:
    """``output_dir=DIR`` holding an earlier run's outputs is refused before Hydra writes its
    ``.hydra/`` and log there (predict_outputs.py), then the Hydra app runs."""
    exit_on_explained_errors(refuse_given_output_dir)()
    _main()


if __name__ == "__main__":
    main()
