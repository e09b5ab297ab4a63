"""One forward with attention capture -> the encoder and decoder figures of each image
(shared by ``detr_lightning.visualize`` and the ``attention_maps`` callback)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from detr_lightning.detr.class_scoring import scoring_of
from detr_lightning.detr.segmentation import detector_of
from detr_lightning.inference.attention import AttentionCapture
from detr_lightning.inference.attention_plot import (
    plot_decoder_attention,
    plot_encoder_attention,
    reference_points,
)
from detr_lightning.inference.draw import query_detections, select_detections
from detr_lightning.inference.results import label_name


@dataclass
class AttentionFigures:
    """One image's figures: ``decoder`` always, ``encoder`` None without encoder layers."""

    decoder: Figure
    encoder: Figure | None


@torch.no_grad()
def attention_figures(
    net: nn.Module,
    pixel_values: Tensor,
    pixel_mask: Tensor,
    images: Sequence[Tensor],
    category_ids: Sequence[int],
    names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    max_objects: int = 6,
    num_points: int = 4,
    points: Sequence[tuple[float, float]] | None = None,
) -> list[AttentionFigures]:
    """Run ``net`` once with :class:`AttentionCapture` and draw every image's figures.

    Args:
        net: the detector (or a panoptic ``DETRsegm`` around it), in eval mode.
        pixel_values: [B, 3, H, W] normalised, padded; pixel_mask: [B, H, W] bool True = real.
        images: B uint8 [3, h_i, w_i] images to draw on (the originals, or the network inputs'
            real part); boxes are scaled to their sizes.
        category_ids, names: label -> category id / class name (figure titles).
        score_threshold, max_objects: which objects get a decoder map (highest scores first).
        num_points: encoder reference points (the top objects' centres, then a grid), unless
            ``points`` gives them as (x, y) in [0, 1].
    """
    encoder = len(detector_of(net).transformer.encoder.layers) > 0
    with AttentionCapture(net, encoder=encoder) as capture:
        outputs = net(pixel_values, pixel_mask)
    maps = capture.maps(num_queries=outputs["pred_logits"].shape[1])
    sizes = torch.tensor([tuple(im.shape[-2:]) for im in images])
    dets = query_detections(outputs, sizes, scoring_of(net))
    figures = []
    for i, (image, det) in enumerate(zip(images, dets, strict=True)):
        keep = select_detections(det["scores"], score_threshold, max_objects)
        titles = [
            f"{label_name(int(det['labels'][q]), category_ids, names)} {float(det['scores'][q]):.2f}"
            for q in keep
        ]
        dec_fig = plot_decoder_attention(
            image, maps.decoder[i, keep].cpu(), maps.mask[i].cpu(), det["boxes"][keep], titles
        )
        enc_fig = None
        if maps.encoder is not None:
            pts = list(points) if points else reference_points(
                det["boxes"][keep], tuple(image.shape[-2:]), num_points
            )  # fmt: skip
            enc_fig = plot_encoder_attention(image, maps.encoder[i].cpu(), maps.mask[i].cpu(), pts)
        figures.append(AttentionFigures(dec_fig, enc_fig))
    return figures
