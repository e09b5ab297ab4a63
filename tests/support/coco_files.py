"""Helpers shared by the data tests: write real images and COCO json files into tmp_path."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, width: int, height: int, color=(120, 60, 200), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).convert(mode).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_dict(images, annotations, categories=None) -> dict:
    categories = categories or [{"id": 1, "name": "thing"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(root: Path, sizes, annotations, categories=None, name="ann.json"):
    """Write one JPEG per (width, height) in ``sizes`` (image ids 1..N) and a json."""
    images = []
    for i, (w, h) in enumerate(sizes, start=1):
        write_image(root / "img" / f"{i:04d}.jpg", w, h)
        images.append({"id": i, "file_name": f"{i:04d}.jpg", "width": w, "height": h})
    ann = write_json(root / name, coco_dict(images, annotations, categories))
    return root / "img", ann


def random_coco(root: Path, num_images=12, seed=0, cat_ids=(3, 7, 10)):
    """Random boxes, including crowd, partly/fully outside the image and zero-size ones."""
    rng = np.random.default_rng(seed)
    sizes = [tuple(int(v) for v in rng.integers(40, 120, 2)) for _ in range(num_images)]
    anns = []
    for i, (w, h) in enumerate(sizes, start=1):
        if i == 2:
            continue  # an image without annotations
        for _ in range(int(rng.integers(1, 6))):
            x, y = rng.uniform(-20, w), rng.uniform(-20, h)
            bw, bh = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            if rng.random() < 0.1:
                bw = 0.0
            anns.append({
                "id": len(anns) + 100, "image_id": i, "category_id": int(rng.choice(cat_ids)),
                "bbox": [round(float(v), 2) for v in (x, y, bw, bh)],
                "area": float(rng.uniform(1, 500)), "iscrowd": int(rng.random() < 0.2),
            })  # fmt: skip
    cats = [{"id": c, "name": f"c{c}"} for c in cat_ids]
    return write_coco(root, sizes, anns, cats)
