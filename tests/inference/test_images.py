"""Image discovery and batching for predictions: recursion, extensions, unreadable files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detr_lightning.data.transforms import make_eval_transforms
from detr_lightning.inference.image_search import find_images
from detr_lightning.inference.images import (
    ImageListDataset,
    coco_split_images,
    collate_images,
    image_loader,
    output_stems,
)


def _write(path, size=(40, 30), value=100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_unreadable_file_is_reported_by_name_and_the_batch_keeps_the_others(tmp_path) -> None:
    _write(tmp_path / "1.png", (40, 30))
    (tmp_path / "2.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    _write(tmp_path / "3.png", (24, 50))
    dataset = ImageListDataset(find_images(tmp_path), make_eval_transforms(32, 64))
    (batch,) = list(image_loader(dataset, batch_size=3))
    assert [s.record.file_name for s in batch.samples] == ["1.png", "3.png"]
    assert len(batch.failed) == 1 and "2.jpg" in batch.failed[0].error
    assert batch.orig_sizes.tolist() == [[30, 40], [50, 24]]
    assert batch.pixel_values.shape[0] == 2 and batch.pixel_mask.dtype.is_floating_point is False
    assert batch.samples[0].original.shape == (3, 30, 40)
    # only failures: an empty batch, no crash
    empty = collate_images([batch.failed[0]])
    assert empty.samples == [] and empty.pixel_values is None and len(empty.failed) == 1


@pytest.mark.parametrize(("images", "workers"), [(1, 0), (4, 0), (5, 1), (10, 2), (40, 8)])
def test_the_loader_starts_no_more_workers_than_batches_after_the_first(
    tmp_path, images: int, workers: int
) -> None:
    """Batches of 4 with num_workers=8: ceil(n / 4) - 1 workers, at most 8, and every image
    comes back once, in order."""
    for i in range(images):
        _write(tmp_path / f"{i:02d}.png")
    dataset = ImageListDataset(find_images(tmp_path), make_eval_transforms(32, 64))
    loader = image_loader(dataset, batch_size=4, num_workers=8)
    assert loader.num_workers == workers
    if images <= 5:
        names = [s.record.file_name for batch in loader for s in batch.samples]
        assert names == [f"{i:02d}.png" for i in range(images)]


def test_output_stems_keep_the_suffix_only_where_names_would_collide() -> None:
    names = ["a/x.jpg", "a/x.png", "a/y.jpg", "b/x.jpg", "Z.png", "z.JPG", "w.jpg", "w.jpg.png",
             "w.png"]  # fmt: skip
    assert output_stems(names) == ["a/x.jpg", "a/x.png", "a/y", "b/x", "Z.png", "z.JPG",
                                   "w.jpg", "w.jpg~2", "w.png"]  # fmt: skip
    assert output_stems(["only.jpeg"]) == ["only"]


@pytest.mark.parametrize("kind", ["instances", "panoptic"])
def test_an_evaluation_split_of_either_kind_gives_its_images(tmp_path, kind) -> None:
    # predict without input= reads the data config's split: detection or panoptic json alike
    ann = {"image_id": 7, "file_name": "a.png", "segments_info": []} if kind == "panoptic" else {
        "id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 4, 4]}  # fmt: skip
    data = {"images": [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30}],
            "annotations": [ann], "categories": [{"id": 1, "name": "x", "isthing": 1}]}  # fmt: skip
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(data))
    (record,) = coco_split_images(tmp_path / "img", path)
    assert (record.image_id, record.path, record.expected_size) == (
        7,
        tmp_path / "img" / "a.jpg",
        (40, 30),
    )


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"id": 8, "file_name": "b.jpg", "height": 30}, r'images\[1\].*"width"'),
        ({"id": "img8", "file_name": "b.jpg", "width": 40, "height": 30}, r'images\[1\].*"id"'),
        ({"id": 7, "file_name": "b.jpg", "width": 40, "height": 30}, r"images\[1\] has id 7"),
    ],
)
def test_an_evaluation_split_with_a_bad_image_record_is_named(tmp_path, image, message) -> None:
    # it used to stop with a bare KeyError / ValueError from the json's values
    from detr_lightning.data.errors import DatasetFormatError

    good = {"id": 7, "file_name": "a.jpg", "width": 40, "height": 30}
    path = tmp_path / "val.json"
    path.write_text(json.dumps({"images": [good, image], "annotations": [], "categories": []}))
    with pytest.raises(DatasetFormatError, match=message) as err:
        coco_split_images(tmp_path / "img", path)
    assert str(err.value).startswith(str(path)) and "Fix:" in str(err.value)


def test_an_image_over_the_pixel_limit_is_skipped_with_the_deliberate_fix(
    tmp_path, monkeypatch
) -> None:
    """predict keeps image_io's decompression-bomb message whole: the pixel count and how to
    raise the limit, worded for a folder (no annotation file to edit)."""
    _write(tmp_path / "big.png", size=(30, 20))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # refused above 2 x 100 pixels
    records = find_images(tmp_path)
    sample = ImageListDataset(records, make_eval_transforms(size=16, max_size=32))[0]
    assert sample.pixels is None and str(tmp_path / "big.png") in sample.error
    assert "600 pixels" in sample.error and "DETR_MAX_IMAGE_PIXELS=600" in sample.error
    assert "remove it from the input" in sample.error and "annotations" not in sample.error


def test_no_readable_image_is_an_explained_error_ending_the_job_without_traceback(
    tmp_path, caplog
) -> None:
    """It was a plain ValueError: predict and visualize ended under Hydra's traceback."""
    from detr_lightning.errors import ExplainedError
    from detr_lightning.inference.images import unreadable_error
    from detr_lightning.utils.job_errors import exit_on_explained_errors

    (tmp_path / "notes.txt").write_text("epoch 3: AP 0.41")
    dataset = ImageListDataset(find_images(tmp_path / "notes.txt"), make_eval_transforms(32, 64))
    sample = dataset[0]
    err = unreadable_error([(sample.record, sample.error)], "input=notes.txt")
    assert isinstance(err, ExplainedError) and isinstance(err, ValueError)

    def job() -> None:
        raise err

    with pytest.raises(SystemExit) as stop:
        exit_on_explained_errors(job)()
    assert stop.value.code == 1
    assert "none of the 1 image file(s) could be read" in caplog.text
    assert "notes.txt" in caplog.text


def test_a_numbered_name_stays_with_the_input_that_has_it() -> None:
    """Inputs x.jpg and x.jpg.png both want the stem x.jpg (x.png takes the suffix rule), and
    an input is literally named x.jpg~2.png: the duplicate gets x.jpg~3, so the drawing
    x.jpg~2.png is the file x.jpg~2.png's."""
    names = ["x.jpg", "x.jpg.png", "x.jpg~2.png", "x.png"]
    assert output_stems(names) == ["x.jpg", "x.jpg~3", "x.jpg~2", "x.png"]
