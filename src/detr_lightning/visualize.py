"""See what DETR attends to: ``python -m detr_lightning.visualize ckpt_path=PATH input=IMAGE``
(``make visualize CKPT=... INPUT=...``; or ``model.pretrained=<official .pth>``).

Draws the paper's two pictures with matplotlib for each image (``input`` may also be a folder):

* ``<name>_encoder.png``: the last encoder layer's self-attention at ``num_points`` reference
  points (the top objects' centres, then a grid; or ``points=[[x, y], ...]`` in [0, 1]);
  not written for models without encoder layers (the ``shapes`` preset has none);
* ``<name>_decoder.png``: each detected object's last-layer decoder cross-attention (objects
  scoring >= ``score_threshold``, at most ``max_objects``) above the image with its box.

Unreadable images are skipped and listed; when none can be read, visualize fails with the list.
Inputs that differ only in their suffix keep it in their figures' names (``x.jpg_decoder.png``).

The attention is captured with hooks (:mod:`detr_lightning.inference.attention`); the model's
outputs and weights are unchanged. Works for DETR and ConvergenceDETR.
"""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig, OmegaConf

from detr_lightning.predict_outputs import refuse_earlier_outputs, refuse_given_output_dir
from detr_lightning.utils import claim_run_dirs_for_jobs_only, conf_dir
from detr_lightning.utils.job_errors import exit_on_explained_errors
from detr_lightning.utils.null_group_choice import refuse_null_group_choices

log = logging.getLogger(__name__)


def visualize(cfg: DictConfig) -> list[str]:
    """Write the figures of every input image; returns the PNG paths."""
    from detr_lightning.inference.loading import check_inference_config

    check_inference_config(cfg, needs_data=False)
    out_dir = cfg.get("output_dir") or cfg.paths.output_dir
    refuse_earlier_outputs(out_dir, "visualize")  # the default folder, or a sweep's jobs' one
    from hydra.utils import instantiate

    from detr_lightning.inference.attention_plot import save_figure
    from detr_lightning.inference.device import resolve_device
    from detr_lightning.inference.explain import attention_figures
    from detr_lightning.inference.image_search import find_images
    from detr_lightning.inference.images import (
        ImageListDataset,
        output_stems,
        unreadable_error,
    )
    from detr_lightning.inference.loading import load_detector

    device = resolve_device(cfg.get("device"))
    detector = load_detector(cfg, device=device)
    records = find_images(cfg.input, out_dir)
    dataset = ImageListDataset(records, instantiate(cfg.data.val_transforms),
                               exif_transpose=bool(cfg.data.get("exif_transpose", True)))  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    points = OmegaConf.to_container(cfg.points) if cfg.get("points") else None
    written: list[str] = []
    stems = output_stems([rec.file_name for rec in dataset.records])
    skipped = []
    for i in range(len(dataset)):
        sample = dataset[i]
        if sample.error:
            log.warning("%s", sample.error)
            skipped.append((sample.record, sample.error))
            continue
        pixels = sample.pixels[None].to(device)
        mask = pixels.new_ones(pixels.shape[0], *pixels.shape[-2:], dtype=bool)
        (figs,) = attention_figures(
            detector.model.net, pixels, mask, [sample.original], detector.category_ids,
            detector.names, float(cfg.score_threshold), int(cfg.max_objects),
            int(cfg.num_points), points,
        )  # fmt: skip
        stem = os.path.join(out_dir, stems[i])
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        written.append(save_figure(figs.decoder, f"{stem}_decoder.png"))
        if figs.encoder is not None:
            written.append(save_figure(figs.encoder, f"{stem}_encoder.png"))
        else:
            log.warning("the model has no encoder layer: no encoder self-attention to draw")
    if skipped and len(skipped) == len(dataset):
        raise unreadable_error(skipped, f"input={cfg.input}")
    for path in written:
        print(f"figure: {path}")
    if skipped:
        listing = "\n  ".join(str(rec.path) for rec, _ in skipped)
        print(f"skipped {len(skipped)} unreadable image(s):\n  {listing}")
    print(f"run directory: {cfg.paths.output_dir}")
    return written


@refuse_null_group_choices(conf_dir())
@claim_run_dirs_for_jobs_only
@hydra.main(config_path=conf_dir(), config_name="visualize", version_base="1.3")
@exit_on_explained_errors
def _main(cfg: DictConfig) -> None:
    """Hydra entry point: refuses training-only overrides first (they would be ignored)."""
    from detr_lightning.utils.unread_overrides import refuse_unread_overrides

    refuse_unread_overrides("visualize")
    visualize(cfg)


def main() -> None:
    """``output_dir=DIR`` holding an earlier run's figures is refused before Hydra writes its
    ``.hydra/`` and log there (predict_outputs.py), then the Hydra app runs."""
    exit_on_explained_errors(refuse_given_output_dir)(entry="visualize")
    _main()


if __name__ == "__main__":
    main()
