"""Data pipeline throughput: images/s per DataLoader worker with the paper's training transforms.

Writes COCO-sized (640x480) JPEGs with ~7 boxes each into a temp dir, then times
``CocoDetectionDataset`` + ``make_train_transforms()`` (decode, flip, multi-scale resize / crop,
normalise) + ``collate`` in one process with one torch thread, which is what each DataLoader
worker does. Also times decoding alone and the evaluation pipeline, and prints the padding
fraction of training batches (:func:`bench_padding`) with and without aspect-ratio grouping.
Figures, not assertions.
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
from detr_lightning.data.sampler import AspectRatioGroupedBatchSampler, aspect_ratio_groups
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


def coco_like_sizes(n: int, seed: int = 0) -> np.ndarray:
    """[n, 2] (h, w) like COCO train2017: long side 640 for 90 % of the images (else 400-639),
    aspect 4:3 (50 %), 3:2 (25 %), 1:1 (7 %), 16:9 (5 %) or 1.1-2.2; 72 % landscape."""
    rng = np.random.default_rng(seed)
    long = np.where(rng.random(n) < 0.9, 640, rng.integers(400, 640, n))
    aspect = rng.choice([4 / 3, 3 / 2, 1.0, 16 / 9, 0.0], n, p=[0.5, 0.25, 0.07, 0.05, 0.13])
    aspect = np.where(aspect == 0, rng.uniform(1.1, 2.2, n), aspect)
    short = np.round(long / aspect).astype(np.int64)
    landscape = (rng.random(n) < 0.72 / 0.93) & (aspect > 1)
    return np.stack([np.where(landscape, short, long), np.where(landscape, long, short)], 1)


def transformed_sizes(sizes: np.ndarray, transforms, seed: int = 0) -> np.ndarray:
    """(h, w) after the geometric steps of ``transforms`` (flip, resize or crop-resize), run on
    a box-only sample so no pixel is touched: the real size distribution of the batches."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    geometric = v2.Compose(transforms.transforms[1:3])
    torch.manual_seed(seed)
    out = []
    for h, w in sizes:
        box = tv_tensors.BoundingBoxes([[0, 0, w, h]], format="XYXY", canvas_size=(h, w))
        out.append(geometric({"boxes": box})["boxes"].canvas_size)
    return np.asarray(out, dtype=np.int64)


def padding_fraction(sizes: np.ndarray, batches, multiple: int | None = None) -> float:
    """Padded pixels / canvas pixels over ``batches`` (lists of indices into ``sizes``)."""
    real = canvas = 0
    for batch in batches:
        hw = sizes[batch]
        h, w = hw[:, 0].max(), hw[:, 1].max()
        if multiple:
            h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        real += int((hw[:, 0] * hw[:, 1]).sum())
        canvas += int(h * w) * len(batch)
    return 1 - real / canvas


def bench_padding(num_images: int = 4000, seed: int = 0) -> dict[str, float]:
    """Padding fraction of training batches, random vs aspect-ratio grouped (2 groups, from the
    json sizes), for a COCO-like size distribution with the paper's augmentation (batch 2 and
    4) and for the shapes training json with the ``experiment=shapes`` preset's augmentation and
    batch size."""
    from bench_shapes_profile import compose_shapes

    repo = Path(__file__).resolve().parents[1]
    cases = [("COCO-like, paper aug.", coco_like_sizes(num_images, seed), make_train_transforms(),
              (2, 4))]  # fmt: skip
    shapes_json = repo / "data" / "shapes" / "annotations" / "instances_train.json"
    if shapes_json.is_file():
        images = json.loads(shapes_json.read_text())["images"]
        # The preset as `make train` composes it: conf/data/shapes.yaml alone has the
        # multi-scale crop that experiment=shapes turns off.
        data = compose_shapes([]).data
        aug = {k: v for k, v in data.train_transforms.items() if k != "_target_"}
        shapes_tf = make_train_transforms(**aug)
        sizes = np.array([[im["height"], im["width"]] for im in images], dtype=np.int64)
        cases.append(("shapes train, preset aug.", sizes, shapes_tf, (data.batch_size,)))
    results = {}
    print("padding fraction of training batches (padded / canvas pixels), one epoch:")
    for name, sizes, tf, batch_sizes in cases:
        after = transformed_sizes(sizes, tf, seed)
        groups = aspect_ratio_groups(sizes)
        for bs in batch_sizes:
            order = torch.randperm(len(sizes), generator=torch.Generator().manual_seed(seed))
            random = [order[i : i + bs].tolist() for i in range(0, len(order), bs)]
            grouped = list(AspectRatioGroupedBatchSampler(order.tolist(), groups, bs))
            row = {f"{kind}{f' pad{m}' if m else ''}": padding_fraction(after, b, m)
                   for kind, b in (("random", random), ("grouped", grouped))
                   for m in (None, 64)}  # fmt: skip
            results.update({f"{name} b{bs} {k}": v for k, v in row.items()})
            print(f"  {name:26s} batch {bs}: random {row['random']:6.1%} -> grouped "
                  f"{row['grouped']:6.1%}   (padded to x64: {row['random pad64']:6.1%} -> "
                  f"{row['grouped pad64']:6.1%})")  # fmt: skip
    return results


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
    bench_padding(num_images=1000 if quick else 4000)
