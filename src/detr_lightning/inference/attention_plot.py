"""The paper's attention pictures with matplotlib (Agg: no display needed).

* :func:`plot_encoder_attention` (paper Fig. 3): the last encoder layer's self-attention of a
  few reference points over the whole image.
* :func:`plot_decoder_attention` (paper Fig. 6): each detected object's last-layer decoder
  cross-attention beside its box.

Maps are the real (unpadded) part of the feature map stretched over the original image, whose
resize to the network input keeps the aspect ratio, so a cell lands where it looked.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are only written to files / loggers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from torch import Tensor  # noqa: E402

Point = tuple[float, float]


def real_region(mask: Tensor) -> tuple[int, int]:
    """(h, w) of the unpadded top-left part of a [h, w] bool feature mask."""
    return int(mask.any(1).sum()), int(mask.any(0).sum())


def reference_points(boxes: Tensor, size: tuple[int, int], count: int = 4) -> list[Point]:
    """``count`` (x, y) points in [0, 1]: the centres of the first boxes (absolute xyxy [K, 4]
    in an image of (h, w) = ``size``), filled up with points of a centred grid."""
    h, w = size
    points = [(float((b[0] + b[2]) / 2 / w), float((b[1] + b[3]) / 2 / h)) for b in boxes[:count]]
    grid = [(0.25, 0.25), (0.75, 0.75), (0.75, 0.25), (0.25, 0.75), (0.5, 0.5)]
    for p in grid:
        if len(points) >= count:
            break
        points.append(p)
    return points[:count]


def _show_image(ax: plt.Axes, image: Tensor) -> None:
    ax.imshow(image.permute(1, 2, 0).cpu().numpy())
    ax.set_axis_off()


def _show_map(ax: plt.Axes, heat: Tensor, image: Tensor) -> None:
    """The map over a grey copy of the image (where it looks, and at what)."""
    h, w = image.shape[-2:]
    ax.imshow(image.float().mean(0).cpu().numpy(), cmap="gray", extent=(0, w, h, 0))
    ax.imshow(heat.float().cpu().numpy(), cmap="viridis", alpha=0.7, extent=(0, w, h, 0),
              interpolation="nearest")  # fmt: skip
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()


def plot_encoder_attention(
    image: Tensor, encoder: Tensor, mask: Tensor, points: Sequence[Point]
) -> Figure:
    """Self-attention of ``points`` over the image.

    Args:
        image: uint8 [3, H, W] original image.
        encoder: [h, w, h, w] one image's encoder self-attention (query cell, key cell).
        mask: [h, w] bool real feature cells.
        points: (x, y) in [0, 1] of the image.
    """
    hr, wr = real_region(mask)
    size = tuple(image.shape[-2:])
    fig, axes = plt.subplots(1, len(points) + 1, figsize=(3.2 * (len(points) + 1), 3.4))
    axes = np.atleast_1d(axes)
    _show_image(axes[0], image)
    axes[0].set_title("reference points")
    for i, (x, y) in enumerate(points):
        px, py = x * size[1], y * size[0]
        axes[0].plot(px, py, "o", ms=8, mec="white", mfc="red")
        axes[0].annotate(str(i + 1), (px, py), color="white", xytext=(5, 5),
                         textcoords="offset points")  # fmt: skip
        cy, cx = min(int(y * hr), hr - 1), min(int(x * wr), wr - 1)
        _show_map(axes[i + 1], encoder[cy, cx, :hr, :wr], image)
        axes[i + 1].plot(px, py, "o", ms=6, mec="white", mfc="red")
        axes[i + 1].set_title(f"self-attention {i + 1} ({x:.2f}, {y:.2f})", fontsize=9)
    fig.suptitle("last encoder layer: self-attention of the reference points")
    fig.tight_layout()
    return fig


def plot_decoder_attention(
    image: Tensor, decoder: Tensor, mask: Tensor, boxes: Tensor, titles: Sequence[str]
) -> Figure:
    """Each object's cross-attention (top) above the image with its box (bottom).

    Args:
        image: uint8 [3, H, W] original image.
        decoder: [K, h, w] the shown objects' last-layer cross-attention.
        mask: [h, w] bool real feature cells.
        boxes: [K, 4] absolute xyxy in the original image.
        titles: one label per object ("name score").
    """
    k = len(boxes)
    hr, wr = real_region(mask)
    if k == 0:
        fig, ax = plt.subplots(1, 1, figsize=(4, 4))
        _show_image(ax, image)
        ax.set_title("no detection above the score threshold")
        return fig
    fig, axes = plt.subplots(2, k, figsize=(3.2 * k, 6.4), squeeze=False)
    for i in range(k):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        _show_map(axes[0, i], decoder[i, :hr, :wr], image)
        _show_image(axes[1, i], image)
        for ax in axes[:, i]:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.5))
        axes[0, i].set_title(titles[i], fontsize=9)
    fig.suptitle("last decoder layer: cross-attention of each detected object")
    fig.tight_layout()
    return fig


def figure_to_array(fig: Figure, close: bool = True) -> np.ndarray:
    """uint8 [H, W, 3] pixels of a rendered figure (for loggers)."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    if close:
        plt.close(fig)
    return rgb


def save_figure(fig: Figure, path: str, close: bool = True) -> str:
    """Write ``fig`` as a PNG at ``path``; returns the path."""
    fig.savefig(path, dpi=100)
    if close:
        plt.close(fig)
    return path
