"""The shapes generator: deterministic, COCO layout, size classes, panoptic PNGs, loadable."""

import json
import logging
import os
import stat
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from detr_lightning.data import shapes
from detr_lightning.data.coco import CocoDetectionDataset
from detr_lightning.data.shapes import (
    annotation_files,
    ensure_shapes_dataset,
    generate_shapes_dataset,
)
from detr_lightning.errors import MissingFileError, UnwritableFolderError


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generate_shapes_dataset(
        tmp_path_factory.mktemp("s") / "shapes", train=80, val=12, seed=3
    )


def load(root, kind, split):
    return json.loads((root / "annotations" / f"{kind}_{split}.json").read_text())


def test_coco_layout(generated):
    for split, n in (("train", 80), ("val", 12)):
        inst, pan = load(generated, "instances", split), load(generated, "panoptic", split)
        assert len(inst["images"]) == len(pan["annotations"]) == n
        for im in inst["images"]:
            with Image.open(generated / split / im["file_name"]) as img:
                assert img.size == (im["width"], im["height"]) and img.format == "JPEG"
            assert 128 <= im["width"] <= 192 and 128 <= im["height"] <= 192
        png_dir = generated / "annotations" / f"panoptic_{split}"
        assert sorted(p.name for p in png_dir.iterdir()) == sorted(
            a["file_name"] for a in pan["annotations"]
        )
    ids = [im["id"] for s in ("train", "val") for im in load(generated, "instances", s)["images"]]
    assert len(set(ids)) == len(ids)


def test_deterministic_given_the_seed(tmp_path, generated):
    again = generate_shapes_dataset(tmp_path / "again", train=80, val=12, seed=3)
    for path in annotation_files(generated):
        assert path.read_bytes() == (again / path.relative_to(generated)).read_bytes()
    for img in (generated / "val").iterdir():
        assert img.read_bytes() == (again / "val" / img.name).read_bytes()
    other = generate_shapes_dataset(tmp_path / "other", train=5, val=1, seed=4)
    assert load(other, "instances", "val") != load(generated, "instances", "val")


def test_parallel_generation_equals_serial(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes, "PARALLEL_MIN", 1)
    parallel = generate_shapes_dataset(tmp_path / "p", train=6, val=0, seed=9)
    monkeypatch.setattr(shapes, "PARALLEL_MIN", 10**9)
    serial = generate_shapes_dataset(tmp_path / "s", train=6, val=0, seed=9)
    for path in sorted((serial / "train").iterdir()) + annotation_files(serial):
        assert path.read_bytes() == (parallel / path.relative_to(serial)).read_bytes()


def test_size_classes_categories_and_empty_images(generated):
    inst = load(generated, "instances", "train")
    areas = np.array([a["area"] for a in inst["annotations"]])
    small, large = (areas < 32**2).mean(), (areas > 96**2).mean()
    assert small > 0.2 and large > 0.08 and 1 - small - large > 0.2
    assert {a["category_id"] for a in inst["annotations"]} == {1, 2, 3, 4, 5}
    per_image = Counter(a["image_id"] for a in inst["annotations"])
    assert 0 < len(inst["images"]) - len(per_image)  # some images hold no object
    assert max(per_image.values()) <= 6 and max(per_image.values()) >= 4


def test_instances_agree_with_panoptic_pngs(generated):
    inst, pan = load(generated, "instances", "val"), load(generated, "panoptic", "val")
    cats = {c["id"]: c for c in pan["categories"]}
    assert {c["id"] for c in inst["categories"]} == {i for i, c in cats.items() if c["isthing"]}
    assert any(not c["isthing"] for c in cats.values())
    by_image = {}
    for a in inst["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for entry in pan["annotations"]:
        rgb = np.asarray(
            Image.open(generated / "annotations" / "panoptic_val" / entry["file_name"]), np.int64
        )
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        segs = {s["id"]: s for s in entry["segments_info"]}
        assert set(np.unique(ids).tolist()) == set(segs)  # every pixel labelled, no stray ids
        things = []
        for sid, s in segs.items():
            m = ids == sid
            ys, xs = np.nonzero(m)
            assert s["area"] == m.sum()
            assert s["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            assert s["category_id"] in cats
            if cats[s["category_id"]]["isthing"]:
                things.append((s["category_id"], s["area"], m))
        anns = by_image.get(entry["image_id"], [])
        assert sorted((c, a) for c, a, _ in things) == sorted(
            (a["category_id"], a["area"]) for a in anns
        )
        for a in anns:  # the instance box is the full shape's: it contains the visible mask
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            assert m.sum() == a["area"]
            ys, xs = np.nonzero(m)
            x, y, w, h = a["bbox"]
            assert x <= xs.min() and y <= ys.min() and xs.max() < x + w and ys.max() < y + h


def test_loads_through_the_coco_dataset(generated):
    ds = CocoDetectionDataset(generated / "val", generated / "annotations" / "instances_val.json")
    assert ds.num_classes == 5 and ds.label_to_category_id == [1, 2, 3, 4, 5]
    assert ds.num_degenerate_boxes == 0 and ds.num_clipped_boxes == 0
    image, target = ds[0]
    assert image.shape[0] == 3 and target["boxes"].shape[1] == 4
    assert ((target["boxes"] > 0) & (target["boxes"] <= 1)).all()
    assert target["labels"].dtype == torch.int64


def test_ensure_is_idempotent_and_atomic(tmp_path, monkeypatch, caplog):
    root = tmp_path / "data" / "shapes"
    assert ensure_shapes_dataset(root, train=3, val=2, seed=0) == root
    stamp = (root / "annotations" / "instances_train.json").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.shapes"):
        ensure_shapes_dataset(root, train=3, val=2, seed=0)
        assert not caplog.records
        ensure_shapes_dataset(root, train=30, val=2, seed=0)
    assert (root / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    assert "not the requested" in caplog.records[0].getMessage()

    def interrupted(root_, split, count, seed):
        if split == "val":
            raise KeyboardInterrupt
        return real(root_, split, count, seed)

    real = shapes._write_split
    monkeypatch.setattr(shapes, "_write_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes_dataset(tmp_path / "broken", train=3, val=2)
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]  # nothing half-written


def test_cli(tmp_path, capsys):
    shapes.main(["--out", str(tmp_path / "cli"), "--train", "4", "--val", "2", "--seed", "1"])
    assert len(load(tmp_path / "cli", "instances", "train")["images"]) == 4
    shapes.main(["--out", str(tmp_path / "cli")])
    assert "already holds" in capsys.readouterr().out


def test_shapes_image_ids_start_at_one_in_each_split(tmp_path):
    """COCO-style ids: train images 1..N, val images VAL_ID_OFFSET + 1.. (file names
    000000000001.jpg, ...)."""
    import json

    from detr_lightning.data.shapes import VAL_ID_OFFSET, generate_shapes_dataset

    root = generate_shapes_dataset(tmp_path / "shapes", train=2, val=1, seed=0)
    train = json.loads((root / "annotations" / "instances_train.json").read_text())
    val = json.loads((root / "annotations" / "instances_val.json").read_text())
    assert sorted(im["id"] for im in train["images"]) == [1, 2]
    assert [im["id"] for im in val["images"]] == [VAL_ID_OFFSET + 1]


def test_the_dataset_folder_gets_a_plain_mkdirs_mode_not_a_temp_folders(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        root = generate_shapes_dataset(tmp_path / "shapes", train=1, val=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755  # readable by the others sharing it


def test_a_link_to_a_missing_folder_is_named_before_anything_is_made(tmp_path) -> None:
    link = tmp_path / "shapes"
    link.symlink_to(tmp_path / "unmounted" / "shapes")
    with pytest.raises(MissingFileError, match="is a link to .*unmounted/shapes, which does not"):
        generate_shapes_dataset(link, train=1, val=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no temp folder left


def test_a_folder_that_cannot_be_written_is_named_with_the_fix(tmp_path) -> None:
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UnwritableFolderError, match="cannot be written into .*a_file/sub.*paths"):
        generate_shapes_dataset(tmp_path / "a_file" / "sub" / "shapes", train=1, val=1)
