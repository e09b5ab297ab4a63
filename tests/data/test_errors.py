"""Every bad input gets an error naming the file/record and the fix (issue: Bad input)."""

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
        DatasetFormatError, match=rf'annotations\[0\] \(id={record["id"]}\) has field "{field}"'
    ):
        make()


def test_image_record_without_size(img_dir):
    image = {"id": 1, "file_name": "0001.jpg"}
    _, make = build(img_dir, coco_dict([image], [], CATS))
    with pytest.raises(DatasetFormatError, match=r'images\[0\] \(id=1\) has field "width"'):
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
    with pytest.raises(DatasetFormatError, match=r"image id 1 appears more than once"):
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


def test_missing_image_file(tmp_path):
    img_dir, path = write_coco(tmp_path, [(32, 24)], [ann()])
    (img_dir / "0001.jpg").unlink()
    ds = CocoDetectionDataset(img_dir, path)
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
    (img_dir / "0002.jpg").unlink()
    loader = DataLoader(CocoDetectionDataset(img_dir, path), batch_size=2, num_workers=1,
                        collate_fn=make_collate_fn())  # fmt: skip
    batches = iter(loader)
    with pytest.raises(ImageLoadError, match=r"Image file not found: .*0002\.jpg"):
        next(batches)
    # Stop the worker explicitly: left to the garbage collector, the iterator's queues can be
    # finalised before it, and torch then waits out a 5 s join timeout.
    batches._shutdown_workers()
