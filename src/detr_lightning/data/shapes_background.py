"""Textured "stuff" backgrounds of the shapes dataset (panoptic categories with isthing=0)."""

import functools

import numpy as np

STUFF_NAMES = ("sky", "ground", "wall")
STUFF_IDS = {name: 6 + i for i, name in enumerate(STUFF_NAMES)}  # after the 5 thing ids


@functools.lru_cache(maxsize=4)
def noise_bank(seed: int) -> np.ndarray:
    """float32 [3, 512, 512] standard normal noise; images take random windows of it (drawing
    fresh Gaussian noise per pixel dominated the generation time)."""
    return np.random.default_rng([seed, 7]).standard_normal((3, 512, 512), dtype=np.float32)


def noise(bank: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random [3, height, width] window of ``bank`` (sides up to 512)."""
    y = int(rng.integers(0, bank.shape[1] - height + 1))
    x = int(rng.integers(0, bank.shape[2] - width + 1))
    return bank[:, y : y + height, x : x + width]


def background(
    height: int, width: int, rng: np.random.Generator, bank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """float32 [3, H, W] pixels and int32 [H, W] stuff segment ids (category_id * 1000).

    Each stuff region is ``c1 + (c2 - c1) * t`` for two random colours and a scalar pattern t:
    a vertical gradient (sky), blotchy noise (ground) or stripes (wall). Channels-first keeps
    numpy's inner loops contiguous (broadcasting over a trailing RGB axis is far slower).
    """
    names = [str(n) for n in rng.choice(STUFF_NAMES, size=int(rng.integers(1, 3)), replace=False)]
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    lower = np.zeros((height, width), bool)
    if len(names) == 2:
        split = rng.uniform(0.3, 0.7) * height + rng.uniform(-0.3, 0.3) * (xx - width / 2)
        lower = yy > split
    grain = noise(bank, height, width, rng)
    pixels = np.empty((3, height, width), np.float32)
    seg = np.empty((height, width), np.int32)
    for k, name in enumerate(names):
        if name == "sky":
            t = yy / height + 0.015 * grain[k]
        elif name == "ground":
            coarse = rng.standard_normal((height // 8 + 1, width // 8 + 1), dtype=np.float32)
            t = 0.5 + 0.08 * coarse.repeat(8, 0).repeat(8, 1)[:height, :width] + 0.1 * grain[k]
        else:
            period = int(rng.integers(6, 15))
            t = np.broadcast_to(
                (((xx if rng.random() < 0.5 else yy) // period) % 2), (height, width)
            )
        c1, c2 = rng.uniform(30, 225, (2, 3, 1, 1)).astype(np.float32)
        inside = lower if k else ~lower
        np.copyto(pixels, c1 + (c2 - c1) * t[None], where=inside[None])
        seg[inside] = STUFF_IDS[name] * 1000
    return pixels, seg
