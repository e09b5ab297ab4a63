"""Generate the shapes dataset, the embedded default, in the COCO 2017 layout.

``python -m detr_lightning.data.shapes --out DIR [--train N] [--val M] [--seed S] [--force]``
writes (``--force`` replaces an existing dataset)::

    DIR/train/*.jpg  DIR/val/*.jpg
    DIR/annotations/instances_{train,val}.json     things only (detection)
    DIR/annotations/panoptic_{train,val}.json      things + stuff, COCO panoptic format
    DIR/annotations/panoptic_{train,val}/*.png     segment ids, id = R + 256 G + 256^2 B

Images are 128-192 px per side (width and height drawn independently). Things (5 categories,
ids 1-5: ellipse, rectangle, triangle, cross, star) have random colours and sizes, 1-6 per
image, 8% of images empty (~2.9 objects per image in all); they are drawn largest first, and a
later shape may hide at most half of an earlier one and never push it into a smaller COCO size
class. Instance ``bbox`` is the full shape's box, ``area`` its visible pixel count and
``segmentation`` the visible mask (RLE), so AP_S/AP_M/AP_L apply to what is visible: about
45% small (< 32^2), 37% medium, 18% large (> 96^2). Stuff (ids 6-8: sky, ground, wall) fills
the rest of every image (1 or 2 regions). Everything is a pure function of ``--seed``; the data
is read by the ordinary COCO loader.
"""

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from detr_lightning.data.panoptic_png import ids_to_rgb
from detr_lightning.data.shapes_background import STUFF_IDS
from detr_lightning.data.shapes_render import THING_IDS, render_image
from detr_lightning.errors import MissingFileError, UnwritableFolderError
from detr_lightning.utils import current_umask

log = logging.getLogger(__name__)
DEFAULT_ROOT = Path("data/shapes")
SPLITS = ("train", "val")
EMPTY_PROB = 0.08
MAX_OBJECTS = 6
SIZE_RANGE = (128, 192)
VAL_ID_OFFSET = 1_000_000  # image ids never collide across splits
PARALLEL_MIN = 100  # images per split from which generation forks worker processes


def categories(panoptic: bool = False) -> list[dict]:
    """Instances categories (things); with ``panoptic`` also stuff, each with ``isthing``."""
    cats = [
        {"id": i, "name": n, "supercategory": "shape", "isthing": 1} for n, i in THING_IDS.items()
    ]
    if panoptic:
        cats += [{"id": i, "name": n, "supercategory": "background", "isthing": 0}
                 for n, i in STUFF_IDS.items()]  # fmt: skip
    return cats


def annotation_files(root: str | Path) -> list[Path]:
    ann = Path(root) / "annotations"
    return [ann / f"{kind}_{split}.json" for split in SPLITS for kind in ("instances", "panoptic")]


def _segments(seg: np.ndarray) -> list[dict]:
    """segments_info entries (id, category_id, bbox xywh, area) of every id in ``seg``."""
    ids, inverse, areas = np.unique(seg, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(seg.shape)
    rows = np.zeros((len(ids), seg.shape[0]), bool)
    cols = np.zeros((len(ids), seg.shape[1]), bool)
    rows[inverse, np.arange(seg.shape[0])[:, None]] = True
    cols[inverse, np.arange(seg.shape[1])[None, :]] = True
    out = []
    for k, seg_id in enumerate(ids.tolist()):
        y0, y1 = np.flatnonzero(rows[k])[[0, -1]]
        x0, x1 = np.flatnonzero(cols[k])[[0, -1]]
        bbox = [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]
        out.append({"id": seg_id, "category_id": seg_id // 1000, "bbox": bbox,
                    "area": int(areas[k]), "iscrowd": 0})  # fmt: skip
    return out


def _make_image(root: Path, split: str, index: int, seed: int) -> tuple[dict, list[dict], dict]:
    """Render and write image ``index`` of ``split``; a pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    height, width = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, 2))
    n = 0 if rng.random() < EMPTY_PROB else int(rng.integers(1, MAX_OBJECTS + 1))
    pixels, seg, shapes = render_image(height, width, n, rng, noise_seed=seed)
    image_id = (VAL_ID_OFFSET if split == "val" else 0) + index + 1
    name = f"{image_id:012d}"
    Image.fromarray(pixels).save(root / split / f"{name}.jpg", quality=90)
    png = root / "annotations" / f"panoptic_{split}" / f"{name}.png"
    Image.fromarray(ids_to_rgb(seg)).save(png, compress_level=1)
    image = {"id": image_id, "file_name": f"{name}.jpg", "width": width, "height": height}
    instances = []
    for shape in shapes:
        visible = seg == shape.segment_id
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        instances.append({
            "image_id": image_id, "category_id": shape.category_id, "bbox": list(shape.box),
            "area": int(visible.sum()), "iscrowd": 0,
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
        })  # fmt: skip
    segments = _segments(seg)
    return (
        image,
        instances,
        {"image_id": image_id, "file_name": png.name, "segments_info": segments},
    )


def _write_split(root: Path, split: str, count: int, seed: int) -> None:
    (root / split).mkdir(parents=True)
    (root / "annotations" / f"panoptic_{split}").mkdir(parents=True)
    jobs = [(root, split, index, seed) for index in range(count)]
    workers = min(os.cpu_count() or 1, 8)
    if count >= PARALLEL_MIN and workers > 1 and "fork" in mp.get_all_start_methods():
        # fork: no re-import of the (torch-importing) package in every worker
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.starmap(_make_image, jobs, chunksize=32)
    else:
        results = [_make_image(*job) for job in jobs]
    images = [r[0] for r in results]
    instances = [dict(ann, id=i + 1) for i, ann in enumerate(a for r in results for a in r[1])]
    panoptic = [r[2] for r in results]
    info = {"description": "detr-lightning shapes dataset", "seed": seed, "split": split}
    common = {"info": info, "licenses": [], "images": images}
    for kind, body in (
        ("instances", {"annotations": instances, "categories": categories()}),
        ("panoptic", {"annotations": panoptic, "categories": categories(panoptic=True)}),
    ):
        with open(root / "annotations" / f"{kind}_{split}.json", "w") as fh:
            json.dump({**common, **body}, fh)


def _temp_folder_beside(out: Path) -> Path:
    """A new hidden folder next to ``out`` with a plain mkdir's mode (mkdtemp's is 0700, which
    would make the renamed dataset private to its maker)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as err:
        raise UnwritableFolderError(
            f"the shapes dataset cannot be written into {out.parent.absolute()}: {err}. Fix: "
            "set paths.shapes_dir to a folder you can write (or generate it once where you "
            "can: python -m detr_lightning.data.shapes --out DIR)."
        ) from None
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def generate_shapes_dataset(
    out: str | Path, train: int = 2000, val: int = 200, seed: int = 0
) -> Path:
    """Write the dataset into ``out`` atomically: built in a sibling temp dir, then renamed.

    ``out`` must not exist (or be an empty directory). Returns ``out``.
    """
    out = Path(out)
    if out.is_symlink() and not out.exists():  # found before the images are made, not after
        raise MissingFileError(
            f"{out} is a link to {os.readlink(out)}, which does not exist (a share not mounted?). "
            "Fix: make the link's target reachable, or remove the link to generate the dataset "
            "there (or set paths.shapes_dir to another folder)."
        )
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; remove it or choose another --out")
    tmp = _temp_folder_beside(out)
    try:
        for split, count in (("train", train), ("val", val)):
            _write_split(tmp, split, count, seed)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _warn_if_different(root: Path, wanted: dict[str, int]) -> None:
    found = {}
    for split in SPLITS:
        with open(root / "annotations" / f"instances_{split}.json") as fh:
            data = json.load(fh)
        found[split], found["seed"] = len(data["images"]), data.get("info", {}).get("seed")
    if found != wanted:
        log.warning("%s holds a shapes dataset made with %s, not the requested %s; it is used as "
                    "is. Delete it (or run `python -m detr_lightning.data.shapes --force`) to "
                    "regenerate.", root, found, wanted)  # fmt: skip


def ensure_shapes_dataset(
    root: str | Path = DEFAULT_ROOT, train: int = 2000, val: int = 200, seed: int = 0
) -> Path:
    """Generate the dataset at ``root`` unless its annotation files are already there."""
    root = Path(root)
    if all(p.is_file() for p in annotation_files(root)):
        _warn_if_different(root, {"train": train, "val": val, "seed": seed})
        return root
    log.info(
        "Generating the shapes dataset in %s (train=%d, val=%d, seed=%d)", root, train, val, seed
    )
    try:
        return generate_shapes_dataset(root, train=train, val=val, seed=seed)
    except OSError:
        # Another process (e.g. a second DDP rank) may have renamed its copy into place first.
        if all(p.is_file() for p in annotation_files(root)):
            return root
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--train", type=int, default=2000, help="training images")
    parser.add_argument("--val", type=int, default=200, help="validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing dataset")
    args = parser.parse_args(argv)
    if args.force and args.out.exists():
        shutil.rmtree(args.out)
    if all(p.is_file() for p in annotation_files(args.out)):
        print(f"{args.out} already holds a shapes dataset; use --force to regenerate it "
              "(make data ARGS=--force)")  # fmt: skip
        return
    generate_shapes_dataset(args.out, train=args.train, val=args.val, seed=args.seed)
    print(f"wrote {args.train} train and {args.val} val images to {args.out}")


if __name__ == "__main__":
    main()
