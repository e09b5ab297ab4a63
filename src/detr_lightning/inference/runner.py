"""The prediction loop: batches of images -> detector -> COCO records and drawn PNGs.

The detector is any callable ``(pixel_values [B, 3, H, W], pixel_mask [B, H, W] bool) ->
{"pred_logits", "pred_boxes"}`` (PyTorch eager or an ONNX Runtime session) followed by a
post-processing callable ``(outputs, sizes [B, 2]) -> detections`` in original pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.inference.draw import (
    draw_predictions,
    instance_masks,
    query_detections,
    select_detections,
)
from detr_lightning.inference.images import (
    ImageBatch,
    ImageListDataset,
    ImageRecord,
    image_loader,
    output_stems,
)
from detr_lightning.inference.panoptic_output import PanopticWriter
from detr_lightning.inference.results import coco_records

log = logging.getLogger(__name__)

Forward = Callable[[Tensor, Tensor], dict[str, Any]]
PostProcess = Callable[[dict[str, Any], Tensor], list[dict[str, Tensor]]]


@dataclass
class DrawOptions:
    """What the PNGs show: detections with score >= ``score_threshold``, at most ``top_k``
    (highest first); ``enabled=False`` writes no PNG."""

    enabled: bool = True
    score_threshold: float = 0.5
    top_k: int | None = 20
    line_width: int = 2
    font: str | None = None
    font_size: int | None = None


@dataclass
class PredictResult:
    """``records``: COCO results of every image; ``images``: (record, (h, w)) of the predicted
    images; ``skipped``: (record, message) of the unreadable ones; ``drawn``: PNG paths."""

    records: list[dict[str, Any]] = field(default_factory=list)
    images: list[tuple[ImageRecord, tuple[int, int]]] = field(default_factory=list)
    skipped: list[tuple[ImageRecord, str]] = field(default_factory=list)
    drawn: list[Path] = field(default_factory=list)


def run_predictions(
    forward: Forward,
    postprocess: PostProcess,
    records: Sequence[ImageRecord],
    transform: Callable,
    category_ids: Sequence[int],
    names: Sequence[str] | None = None,
    draw_dir: str | Path | None = None,
    draw: DrawOptions | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    scoring: SoftmaxScoring | None = None,
    panoptic: PanopticWriter | None = None,
    exif_transpose: bool = True,
    pad_to_multiple: int | None = None,
) -> PredictResult:
    """Predict on ``records`` in batches; unreadable images are logged by name and skipped.

    Args:
        forward: the detector (module docstring); it receives tensors on ``device``.
        postprocess: outputs + original sizes [B, 2] (h, w) -> per-image "boxes" (absolute xyxy),
            "scores", "labels".
        records: the images, in output order.
        transform: the evaluation transform (``data.val_transforms``).
        category_ids, names: label -> dataset category id / class name.
        draw_dir: where the PNGs go (mirroring the input's sub-folders, named by
            :func:`~detr_lightning.inference.images.output_stems`); None: no drawing.
        draw: what to draw.
        batch_size, num_workers: the DataLoader's.
        device: where the forward runs (inputs are moved there).
        progress: show a progress bar over the images.
        scoring: the model's class scoring (None: the paper's softmax); it scores the drawn
            segments of panoptic models.
        panoptic: collects each image's panoptic segmentation (PNG named as the drawn one) when
            the outputs have ``pred_masks``.
        exif_transpose: read images upright by their EXIF orientation (``data.exif_transpose``;
            False: as stored).
        pad_to_multiple: pad each batch's height and width up to a multiple of it
            (``data.pad_to_multiple``, as the evaluation batches).

    Panoptic models (outputs with ``pred_masks``): each drawn detection is one query, filled with
    its mask (:func:`~detr_lightning.inference.draw.instance_masks`) in its class colour.
    """
    draw = draw or DrawOptions()
    drawing = draw_dir is not None and draw.enabled
    dataset = ImageListDataset(records, transform, keep_original=drawing,
                               exif_transpose=exif_transpose)  # fmt: skip
    device = torch.device(device)
    loader = image_loader(dataset, batch_size, num_workers, pad_to_multiple,
                          pin_memory=device.type == "cuda")  # fmt: skip
    result = PredictResult()
    png_names = {rec: stem + ".png" for rec, stem in
                 zip(records, output_stems([r.file_name for r in records]), strict=True)}  # fmt: skip
    bar = tqdm(total=len(records), unit="img", desc="predict", disable=not progress)
    for batch in loader:
        for failed in batch.failed:
            log.warning("%s", failed.error)
            result.skipped.append((failed.record, failed.error or ""))
        if batch.samples:
            with torch.inference_mode():
                outputs = forward(
                    batch.pixel_values.to(device, non_blocking=True),
                    batch.pixel_mask.to(device, non_blocking=True),
                )
                preds = postprocess(outputs, batch.orig_sizes.to(device))
                segments = _segments(outputs, batch, draw, scoring) if drawing else None
                if panoptic is not None and "pred_masks" in outputs:
                    samples = batch.samples
                    panoptic.add(
                        outputs, [tuple(s.pixels.shape[-2:]) for s in samples],
                        [s.orig_size for s in samples], tuple(batch.pixel_values.shape[-2:]),
                        [s.record.image_id for s in samples],
                        [png_names[s.record] for s in samples],
                    )  # fmt: skip
            for i, (sample, pred) in enumerate(zip(batch.samples, preds, strict=True)):
                pred = {k: v.cpu() for k, v in pred.items()}
                rec = sample.record
                result.records += coco_records(pred, rec.image_id, category_ids, names)
                result.images.append((rec, sample.orig_size))
                if drawing:
                    shown = segments[i] if segments else pred
                    path = Path(draw_dir) / png_names[rec]
                    result.drawn.append(_draw(sample.original, shown, path, category_ids, names,
                                              draw))  # fmt: skip
        bar.update(len(batch.samples) + len(batch.failed))
    bar.close()
    return result


def _segments(
    outputs: dict[str, Any], batch: ImageBatch, draw: DrawOptions, scoring: SoftmaxScoring | None
) -> list[dict[str, Tensor]] | None:
    """Per image, the detections to draw with their masks, when the model predicts masks."""
    masks = outputs.get("pred_masks") if isinstance(outputs, dict) else None
    if masks is None:
        return None
    canvas = tuple(batch.pixel_values.shape[-2:])
    shown = []
    for i, det in enumerate(query_detections(outputs, batch.orig_sizes, scoring)):
        keep = select_detections(det["scores"], draw.score_threshold, draw.top_k)
        sample = batch.samples[i]
        det = {k: v[keep] for k, v in det.items()}
        det["masks"] = instance_masks(masks[i, keep.to(masks.device)], canvas,
                                      tuple(sample.pixels.shape[-2:]), sample.orig_size)  # fmt: skip
        shown.append(det)
    return shown


def _draw(
    image: Tensor,
    pred: dict[str, Tensor],
    path: Path,
    category_ids: Sequence[int],
    names: Sequence[str] | None,
    opts: DrawOptions,
) -> Path:
    from torchvision.io import write_png

    drawn = draw_predictions(
        image, pred, category_ids, names, opts.score_threshold, opts.top_k, opts.line_width,
        opts.font, opts.font_size,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(drawn, str(path))
    return path
