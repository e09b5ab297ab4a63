"""Every bad input gets an error naming the file/record and the fix (issue: Bad input)."""

import json
import logging

import pytest
from coco_files import coco_dict, write_coco, write_image, write_json
from PIL import Image
from torch.utils.data import DataLoader

from detr_lightning.data.coco import CocoDetectionDataset
from detr_lightning.data.collate import make_collate_fn
from detr_lightning.data.errors import DatasetFormatError, ImageLoadError

IMAGE = {"id": 1, "file_name": "0001.jpg", "width": 32, "height": 24}
CATS = [{"id": 1, "name": "thing"}]


def ann(i=1, image_id=1, category_id=1, bbox=(1, 2, 10, 10)):
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": list(bbox)}


@pytest.fixture
def img_dir(tmp_path):
    write_image(tmp_path / "img" / "0001.jpg", 32, 24)
    return tmp_path / "img"


def build(img_dir, data, name="bad.json"):
    path = write_json(img_dir.parent / name, data)
    return path, lambda **kw: CocoDetectionDataset(img_dir, path, **kw)


def test_missing_annotation_file(img_dir):
    with pytest.raises(FileNotFoundError, match=r"Annotation file not found: .*nope\.json.*Fix"):
        CocoDetectionDataset(img_dir, img_dir.parent / "nope.json")


def test_missing_image_folder(tmp_path):
    path = write_json(tmp_path / "a.json", coco_dict([IMAGE], [ann()]))
    with pytest.raises(FileNotFoundError, match=r"Image folder not found: .*missing.*a\.json"):
        CocoDetectionDataset(tmp_path / "missing", path)


def test_not_json(img_dir):
    path = img_dir.parent / "trunc.json"
    path.write_text('{"images": [{"id": 1, "file_na')
    with pytest.raises(DatasetFormatError, match=r"trunc\.json is not valid JSON.*Fix"):
        CocoDetectionDataset(img_dir, path)


def test_json_of_the_wrong_type(img_dir):
    _, make = build(img_dir, [1, 2, 3])
    with pytest.raises(DatasetFormatError, match=r"bad\.json holds a JSON list"):
        make()


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(img_dir, key):
    data = coco_dict([IMAGE], [ann()], CATS)
    del data[key]
    _, make = build(img_dir, data)
    with pytest.raises(
        DatasetFormatError, match=rf'bad\.json: top-level key "{key}" is missing.*Fix'
    ):
        make()


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (ann(bbox=(1, 2, 3)), "bbox"),
        ({**ann(), "bbox": ["a", 1, 2, 3]}, "bbox"),
        ({"id": 7, "image_id": 1, "bbox": [1, 1, 2, 2]}, "category_id"),
        ({**ann(), "iscrowd": "no"}, "iscrowd"),
        ({**ann(), "area": None}, "area"),
    ],
)
def test_malformed_annotation_record(img_dir, record, field):
    _, make = build(img_dir, coco_dict([IMAGE], [record], CATS))
    with pytest.raises(
        DatasetFormatError,
        match=rf'annotations\[0\] \(id={record["id"]}\) has (field |no )?"{field}"',
    ):
        make()


def test_image_record_without_size(img_dir):
    image = {"id": 1, "file_name": "0001.jpg"}
    _, make = build(img_dir, coco_dict([image], [], CATS))
    with pytest.raises(
        DatasetFormatError, match=r'images\[0\] \(id=1\) has no "width" field \(missing\)'
    ):
        make()


def test_annotation_with_unknown_image(img_dir):
    _, make = build(img_dir, coco_dict([IMAGE], [ann(), ann(5, image_id=99), ann(6, image_id=98)]))
    with pytest.raises(DatasetFormatError) as err:
        make()
    msg = str(err.value)
    assert "bad.json" in msg and "annotation id 5 (and 1 more)" in msg and "image_id 99" in msg
    assert "Fix" in msg


def test_annotation_with_unknown_category(img_dir):
    _, make = build(img_dir, coco_dict([IMAGE], [ann(3, category_id=12)], CATS))
    with pytest.raises(DatasetFormatError, match=r"annotation id 3 refers to category_id 12.*Fix"):
        make()


def test_category_missing_from_an_explicit_mapping(img_dir):
    cats = CATS + [{"id": 2, "name": "other"}]
    _, make = build(img_dir, coco_dict([IMAGE], [ann(4, category_id=2)], cats))
    with pytest.raises(DatasetFormatError, match=r"annotation id 4 .*label mapping \[1\]"):
        make(label_to_category_id=[1])


def test_duplicate_image_ids(img_dir):
    _, make = build(img_dir, coco_dict([IMAGE, IMAGE], [], CATS))
    with pytest.raises(
        DatasetFormatError, match=r"images\[1\] has id 1, which an earlier record.*unique id"
    ):
        make()


def test_empty_dataset(img_dir):
    _, make = build(img_dir, coco_dict([], [], CATS))
    with pytest.raises(DatasetFormatError, match=r"bad\.json: the dataset is empty \(no images"):
        make()
    _, make = build(img_dir, coco_dict([IMAGE], [], CATS))
    with pytest.raises(
        DatasetFormatError, match=r"no image with usable annotations.*keep_empty=True"
    ):
        make(keep_empty=False)


def test_missing_image_files_fail_when_the_dataset_is_built(tmp_path):
    sizes = [(32, 24)] * 8
    img_dir, path = write_coco(tmp_path, sizes, [ann(i, image_id=i) for i in range(1, 9)])
    for i in (2, 3, 4, 5, 6, 8):
        (img_dir / f"{i:04d}.jpg").unlink()
    with pytest.raises(ImageLoadError) as err:
        CocoDetectionDataset(img_dir, path)
    msg = str(err.value)
    assert msg.startswith(f"6 image files listed in {path} not found: ")
    assert all(f"{i:04d}.jpg" in msg for i in (2, 3, 4, 5, 6)) and "0008.jpg" not in msg
    assert "and 1 more" in msg and "Fix" in msg and "0001.jpg" not in msg


def test_image_in_a_subfolder_is_found(tmp_path):
    write_image(tmp_path / "img" / "a" / "b.jpg", 32, 24)
    image = {**IMAGE, "file_name": "a/b.jpg"}
    path = write_json(tmp_path / "ann.json", coco_dict([image], [ann()], CATS))
    assert len(CocoDetectionDataset(tmp_path / "img", path)) == 1


def test_image_removed_after_the_dataset_was_built(tmp_path):
    img_dir, path = write_coco(tmp_path, [(32, 24)], [ann()])
    ds = CocoDetectionDataset(img_dir, path)
    (img_dir / "0001.jpg").unlink()
    with pytest.raises(
        ImageLoadError, match=r"Image file not found: .*0001\.jpg \(listed in .*ann\.json\)"
    ):
        ds[0]


def test_corrupt_image(tmp_path):
    img_dir, path = write_coco(tmp_path, [(32, 24)], [ann()])
    (img_dir / "0001.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    with pytest.raises(ImageLoadError, match=r"Cannot decode image .*0001\.jpg .*corrupt"):
        CocoDetectionDataset(img_dir, path)[0]


def test_truncated_image(tmp_path):
    img_dir, path = write_coco(tmp_path, [(64, 48)], [ann()])
    noisy = Image.effect_noise((64, 48), 80).convert("RGB")  # noise: a JPEG with many bytes
    noisy.save(img_dir / "0001.jpg", quality=95)
    data = (img_dir / "0001.jpg").read_bytes()
    (img_dir / "0001.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"Cannot decode image .*0001\.jpg.*truncated"):
        CocoDetectionDataset(img_dir, path)[0]


def test_image_size_differs_from_json(tmp_path):
    img_dir, path = write_coco(tmp_path, [(32, 24)], [ann()])
    write_image(img_dir / "0001.jpg", 30, 24)
    with pytest.raises(ImageLoadError, match=r"0001\.jpg is 30x24 .*says 32x24.*Fix"):
        CocoDetectionDataset(img_dir, path)[0]


def test_error_crosses_the_dataloader_worker_boundary(tmp_path):
    img_dir, path = write_coco(tmp_path, [(32, 24), (32, 24)], [ann()])
    dataset = CocoDetectionDataset(img_dir, path)
    (img_dir / "0002.jpg").unlink()
    loader = DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=make_collate_fn())
    batches = iter(loader)
    with pytest.raises(ImageLoadError, match=r"Image file not found: .*0002\.jpg"):
        next(batches)
    # Stop the worker explicitly: left to the garbage collector, the iterator's queues can be
    # finalised before it, and torch then waits out a 5 s join timeout.
    batches._shutdown_workers()


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (ann(bbox=(20, 2, -10, 10)), r'"bbox" = \[20, 2, -10, 10\] with a negative width'),
        (ann(bbox=(1, 12, 10, -10)), r'"bbox" = \[1, 12, 10, -10\] .*COCO boxes are \[x, y, width'),
        ({**ann(), "iscrowd": 2}, r'"iscrowd" = 2; expected 0 or 1'),
        ({**ann(), "area": -5}, r'"area" = -5; expected a number >= 0'),
        ({**ann(), "area": float("nan")}, r'"area" = nan'),
    ],
)
def test_out_of_range_annotation_values(img_dir, record, problem):
    _, make = build(img_dir, coco_dict([IMAGE], [record], CATS))
    with pytest.raises(DatasetFormatError, match=r"annotations\[0\] \(id=1\) has " + problem):
        make()


@pytest.mark.parametrize("section", ["categories", "annotations"])
def test_duplicate_ids(img_dir, section):
    cats = CATS + [{"id": 2, "name": "other"}]
    anns = [ann(1), ann(2, category_id=2)]
    data = coco_dict([IMAGE], anns, cats)
    data[section][1]["id"] = 1
    _, make = build(img_dir, data)
    record = {"categories": "category", "annotations": "annotation"}[section]
    with pytest.raises(
        DatasetFormatError, match=rf"{section}\[1\] has id 1, .*every {record} record"
    ):
        make()


def test_json_with_a_byte_order_mark(img_dir):
    path = img_dir.parent / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(coco_dict([IMAGE], [ann()], CATS)).encode())
    assert len(CocoDetectionDataset(img_dir, path)) == 1


def test_panoptic_json_where_instances_are_expected(img_dir):
    record = {"image_id": 1, "file_name": "0001.png", "segments_info": []}
    _, make = build(img_dir, coco_dict([IMAGE], [record], CATS))
    with pytest.raises(DatasetFormatError, match=r"is a COCO panoptic json .*data=coco_panoptic"):
        make()


def test_normalised_boxes(img_dir):
    anns = [ann(1, bbox=(0.1, 0.2, 0.3, 0.4)), ann(2, bbox=(0.5, 0.5, 0.5, 0.5))]
    _, make = build(img_dir, coco_dict([IMAGE], anns, CATS))
    with pytest.raises(DatasetFormatError, match=r"all 2 bboxes lie within \[0, 1\], on images "
                                                 r"up to 32x24 pixels: they look normalised"):  # fmt: skip
        make()


def test_corner_boxes_get_a_format_hint(img_dir, caplog):
    # [x1, y1, x2, y2] read as [x, y, w, h]: boxes away from the origin reach far outside.
    anns = [ann(1, bbox=(2, 2, 8, 8)), ann(2, bbox=(20, 12, 30, 22)), ann(3, bbox=(16, 4, 28, 20))]
    _, make = build(img_dir, coco_dict([IMAGE], anns, CATS))
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.coco"):
        make()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "2 boxes reaching outside their image (annotation ids 2, 3) are scored" in warning
    assert "2 of 3 boxes reach more than a pixel outside" in warning
    assert "[x1, y1, x2, y2], convert them to COCO's [x, y, width, height]" in warning


def test_split_without_objects(tmp_path):
    img_dir, path = write_coco(tmp_path, [(32, 24)], [{**ann(), "iscrowd": 1}])
    for split in ("train", "val"):
        with pytest.raises(DatasetFormatError, match=rf"the {split} split has no object to "
                                                     rf".*data\.{split}_ann"):  # fmt: skip
            CocoDetectionDataset(img_dir, path).require_objects(split)


def test_more_objects_than_queries(tmp_path):
    anns = [ann(i, image_id=2) for i in range(1, 5)] + [ann(9, image_id=3), ann(10, image_id=3)]
    anns.append({**ann(11, image_id=2), "iscrowd": 1})  # crowd objects never reach the matcher
    img_dir, path = write_coco(tmp_path, [(32, 24)] * 3, anns)
    ds = CocoDetectionDataset(img_dir, path)
    assert ds.object_counts().tolist() == [0, 4, 2]
    ds.check_query_capacity(4)
    with pytest.raises(DatasetFormatError, match=r"image id 2 \(0002\.jpg\) has 4 objects .* "
                                                 r"model's 3 queries \(1 images exceed it\).*"
                                                 r"model\.net\.num_queries=4"):  # fmt: skip
        ds.check_query_capacity(3)
    # A model that trains on crowd objects (model.train_on_crowd, head=panoptic) matches them.
    assert ds.object_counts(crowd=True).tolist() == [0, 5, 2]
    with pytest.raises(DatasetFormatError, match=r"has 5 objects \(crowd ones counted"):
        ds.check_query_capacity(4, crowd=True)


def test_a_missing_field_reads_as_missing_not_none(img_dir):
    """An annotation without "bbox" is named as missing; one with "bbox": null keeps "= None"."""
    record = {"id": 4, "image_id": 1, "category_id": 1}
    _, make = build(img_dir, coco_dict([IMAGE], [record], CATS))
    with pytest.raises(DatasetFormatError, match=r'annotations\[0\] \(id=4\) has no "bbox" field '
                                                 r"\(missing\); expected 4 finite numbers"):  # fmt: skip
        make()
    _, make = build(img_dir, coco_dict([IMAGE], [{**record, "bbox": None}], CATS))
    with pytest.raises(DatasetFormatError, match=r'has field "bbox" = None; expected 4'):
        make()


def test_missing_categories_ask_for_the_training_categories(img_dir):
    """A json without "categories" needs the training json's list, not an empty one."""
    data = coco_dict([IMAGE], [ann()], CATS)
    del data["categories"]
    _, make = build(img_dir, data)
    with pytest.raises(DatasetFormatError) as err:
        make()
    msg = str(err.value)
    assert 'add the training json\'s "categories" list' in msg and '"categories": []' not in msg


def test_a_backslash_in_a_file_name_gets_the_windows_separator_hint(img_dir):
    """sub\\0001.jpg (a Windows-made json) is one file name on POSIX, not found; the image is
    at sub/0001.jpg. The error says to write forward slashes."""
    write_image(img_dir / "sub" / "0001.jpg", 32, 24)
    image = {**IMAGE, "file_name": "sub\\0001.jpg"}
    _, make = build(img_dir, coco_dict([image], [ann()], CATS))
    with pytest.raises(ImageLoadError) as err:
        make()
    msg = str(err.value)
    assert "1 of these file_names contain a backslash (e.g. sub\\0001.jpg)" in msg
    assert "forward slashes in the json (e.g. sub/0001.jpg)" in msg


@pytest.mark.parametrize("json_form", ["NFC", "NFD"])
def test_a_name_in_the_other_unicode_form_is_named_with_the_fix(img_dir, json_form):
    """café.jpg written by macOS (NFD: e + combining acute) and listed by a Linux-made json
    (NFC: é), or the reverse: POSIX compares bytes, so the file is not found; the error says it
    exists in the other form and which form to rename to."""
    nfc, nfd = "caf\u00e9.jpg", "cafe\u0301.jpg"
    on_disk, in_json = (nfd, nfc) if json_form == "NFC" else (nfc, nfd)
    write_image(img_dir / on_disk, 32, 24)
    _, make = build(img_dir, coco_dict([{**IMAGE, "file_name": in_json}], [ann()], CATS))
    with pytest.raises(ImageLoadError) as err:
        make()
    msg = str(err.value)
    assert "1 of these exist under the same name in the other Unicode form" in msg
    assert f"{in_json!a} in the json is {json_form}, {on_disk!a} on disk is not" in msg
    assert f"--{json_form.lower()} -r --notest {img_dir}" in msg
    assert "backslash" not in msg
    write_image(img_dir / "other.jpg", 32, 24)  # a plainly missing file gets no such hint
    _, make = build(img_dir, coco_dict([{**IMAGE, "file_name": "gone.jpg"}], [ann()], CATS))
    with pytest.raises(ImageLoadError) as err:
        make()
    assert "Unicode form" not in str(err.value)
