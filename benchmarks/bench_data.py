"""Data pipeline throughput: images/s per DataLoader worker with the paper's training transforms.

Writes COCO-sized (640x480) JPEGs with ~7 boxes each into a temp dir, then times
``CocoDetectionDataset`` + ``make_train_transforms()`` (decode, flip, multi-scale resize / crop,
normalise) + ``collate`` in one process with one torch thread, which is what each DataLoader
worker does. Also times decoding alone and the evaluation pipeline. Figures, not assertions.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from detr_lightning.data.coco import CocoDetectionDataset
from detr_lightning.data.collate import make_collate_fn
from detr_lightning.data.image_io import load_rgb_image
from detr_lightning.data.transforms import make_eval_transforms, make_train_transforms


def write_images(root: Path, n: int, seed: int = 0) -> Path:
    """n 640x480 JPEGs (smooth colour field + noise + rectangles) and an instances json."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, n + 1):
        low = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(low).resize((640, 480), Image.BICUBIC), np.float32)
        pixels = field + rng.normal(0, 12, field.shape)
        for _ in range(7):
            x, y = int(rng.integers(0, 560)), int(rng.integers(0, 400))
            w, h = int(rng.integers(8, 640 - x)), int(rng.integers(8, 480 - y))
            pixels[y : y + h, x : x + w] = rng.uniform(0, 255, 3)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        img.save(root / "img" / f"{i:06d}.jpg", quality=90)
        images.append({"id": i, "file_name": f"{i:06d}.jpg", "width": 640, "height": 480})
    ann = root / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": 1, "name": "box"}]}))  # fmt: skip
    return ann


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bench_data(num_images: int = 64, epochs: int = 2, batch_size: int = 2) -> dict[str, float]:
    """Print and return images/s for decode only, train pipeline and eval pipeline."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs with one thread
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ann = write_images(Path(tmp), num_images)
            results = {}
            files = sorted((Path(tmp) / "img").iterdir())
            results["decode_only"] = _rate(
                lambda: [load_rgb_image(f, ann) for f in files], len(files)
            )
            for name, tf in (("train", make_train_transforms()), ("eval", make_eval_transforms())):
                ds = CocoDetectionDataset(
                    Path(tmp) / "img", ann, transforms=tf, train=name == "train"
                )
                loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0,
                                    collate_fn=make_collate_fn())  # fmt: skip
                for _ in zip(range(3), loader, strict=False):  # warm-up
                    pass
                torch.manual_seed(0)
                results[name] = _rate(lambda loader=loader: [b for _ in range(epochs) for b in loader],
                                      epochs * len(ds))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    print("data pipeline, 640x480 JPEGs, 1 process / 1 torch thread (= per DataLoader worker):")
    print(f"  decode + RGB/EXIF only        {results['decode_only']:7.1f} images/s")
    print(f"  train (paper augmentation)    {results['train']:7.1f} images/s per worker")
    print(f"  eval  (short side 800)        {results['eval']:7.1f} images/s per worker")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (noisier figures)")
    quick = parser.parse_args().quick
    bench_data(num_images=16 if quick else 64, epochs=1 if quick else 2)
