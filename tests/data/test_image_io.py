"""Image modes to RGB and EXIF orientation, through the dataset's real file path; an image over
PIL's decompression-bomb limit fails naming the file, its pixel count and how to raise the
limit deliberately."""

import importlib

import numpy as np
import pytest
import torch
from coco_files import coco_dict, write_json
from PIL import Image

from detr_lightning.data import image_io
from detr_lightning.data.coco import CocoDetectionDataset
from detr_lightning.data.errors import ImageLoadError
from detr_lightning.data.image_io import check_image_headers, load_rgb_image
from detr_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _palette_image():
    img = Image.new("P", (6, 4), 0)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putpixel((0, 0), 1)
    return img


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("gray.png", lambda: Image.new("L", (6, 4), 100), (100, 100, 100)),
        ("bilevel.png", lambda: Image.new("1", (6, 4), 1), (255, 255, 255)),
        ("rgba.png", lambda: Image.new("RGBA", (6, 4), (10, 20, 30, 0)), (10, 20, 30)),
        ("la.png", lambda: Image.new("LA", (6, 4), (77, 128)), (77, 77, 77)),
        ("cmyk.tif", lambda: Image.new("CMYK", (6, 4), (0, 0, 0, 0)), (255, 255, 255)),
        ("cmyk_cyan.tif", lambda: Image.new("CMYK", (6, 4), (255, 0, 0, 0)), (0, 255, 255)),
        ("palette.png", _palette_image, (200, 100, 50)),
        ("wide16.png", lambda: Image.new("I;16", (6, 4), 65535), (255, 255, 255)),
    ],
)
def test_modes_become_rgb(tmp_path, name, make, expected):
    img = make()
    if name == "palette.png":
        img.info["transparency"] = 0
    path = _save(img, tmp_path / name)
    out = load_rgb_image(path, "x.json", expected_size=(6, 4))
    assert out.mode == "RGB" and out.size == (6, 4)
    pixel = (0, 0) if name == "palette.png" else (3, 2)
    assert out.getpixel(pixel) == expected


def test_cmyk_jpeg_through_the_dataset(tmp_path):
    _save(Image.new("CMYK", (8, 6), (0, 255, 255, 0)), tmp_path / "img" / "c.jpg", quality=95)
    ann = write_json(
        tmp_path / "a.json",
        coco_dict([{"id": 1, "file_name": "c.jpg", "width": 8, "height": 6}], []),
    )
    image, _ = CocoDetectionDataset(tmp_path / "img", ann)[0]
    rgb = (
        image * torch.tensor(IMAGENET_STD)[:, None, None]
        + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )
    # C=0, M=Y=100%, K=0 is pure red
    torch.testing.assert_close(rgb.mean((1, 2)) * 255, torch.tensor([255.0, 0, 0]), atol=4, rtol=0)
    assert image.shape == (3, 6, 8)


def _exif_image(orientation: int):
    """A 40x20 stored image: red block top-left, rest blue; EXIF orientation tag set."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[..., 2] = 255
    arr[:8, :12] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    return img, arr, exif


def test_exif_orientation_is_applied(tmp_path):
    img, arr, exif = _exif_image(6)  # 6: the viewer rotates 90 degrees clockwise
    path = _save(img, tmp_path / "img" / "r.jpg", exif=exif, quality=98)
    upright = np.rot90(arr, k=-1)  # independent expectation: clockwise rotation, 20 wide x 40 tall
    ann = write_json(tmp_path / "a.json",
                     coco_dict([{"id": 1, "file_name": "r.jpg", "width": 20, "height": 40}],
                               [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 0, 12, 12]}]))  # fmt: skip
    out = np.asarray(load_rgb_image(path, ann, expected_size=(20, 40))).astype(int)
    assert out.shape == upright.shape
    assert np.abs(out - upright).mean() < 6
    ds = CocoDetectionDataset(tmp_path / "img", ann)
    _, target = ds[0]
    assert target["orig_size"].tolist() == [40, 20] and target["size"].tolist() == [40, 20]


def test_exif_ignored_when_the_json_describes_the_stored_pixels(tmp_path):
    img, arr, exif = _exif_image(8)
    path = _save(img, tmp_path / "r.jpg", exif=exif, quality=98)
    out = np.asarray(load_rgb_image(path, "a.json", expected_size=(40, 20))).astype(int)
    assert np.abs(out - arr).mean() < 6
    rotated = np.asarray(load_rgb_image(path, "a.json")).astype(int)
    assert rotated.shape == (40, 20, 3) and np.abs(rotated - np.rot90(arr, k=1)).mean() < 6


def test_headers_are_checked_without_decoding(tmp_path):
    rotated = _save(_exif_image(6)[0], tmp_path / "r.jpg", exif=_exif_image(6)[2])  # 40x20 stored
    plain = _save(Image.new("RGB", (30, 10)), tmp_path / "p.png")
    check_image_headers([(rotated, (20, 40)), (rotated, (40, 20)), (plain, (30, 10))], "a.json")
    garbage = tmp_path / "g.png"
    garbage.write_bytes(b"not an image at all" * 4)
    files = [(plain, (10, 30)), (garbage, (5, 5)), (rotated, (40, 40))]
    with pytest.raises(ImageLoadError) as err:
        check_image_headers(files, "a.json")
    msg = str(err.value)
    assert msg.startswith("3 images listed in a.json cannot be used: ")
    assert "p.png is 30x10, the json says 10x30" in msg and "UnidentifiedImageError" in msg
    assert "r.jpg is 40x20, the json says 40x40" in msg and "Fix" in msg


def test_decompression_bomb_names_file_pixels_and_fix(tmp_path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (30, 20)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # refused above 2 x 100 pixels
    with pytest.raises(ImageLoadError) as err:
        image_io.load_rgb_image(path, "instances.json")
    msg = str(err.value)
    assert str(path) in msg and "instances.json" in msg and "600 pixels" in msg
    assert "DETR_MAX_IMAGE_PIXELS=600" in msg and "MAX_IMAGE_PIXELS = 600" in msg


def test_the_limit_is_raised_deliberately_by_environment(tmp_path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (30, 20)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # restored after the test
    monkeypatch.setenv(image_io.PIXEL_LIMIT_ENV, "600")
    importlib.reload(image_io)
    try:
        assert Image.MAX_IMAGE_PIXELS == 600
        assert image_io.load_rgb_image(path, "instances.json").size == (30, 20)
    finally:
        monkeypatch.delenv(image_io.PIXEL_LIMIT_ENV)
        importlib.reload(image_io)


def test_a_panoptic_png_of_another_size_is_named_as_the_problem(tmp_path):
    """The images' headers are checked first, so a PNG whose size is not the json's is the PNG's
    fault: the fix says to re-export the PNG, not to edit the json's width/height (which would
    then disagree with the image). Images keep the width/height hint."""
    png = _save(Image.new("RGB", (50, 40)), tmp_path / "seg.png")
    with pytest.raises(ImageLoadError) as err:
        check_image_headers([(png, (183, 171))], "pan.json", "panoptic PNGs")
    msg = str(err.value)
    assert "seg.png is 50x40, the json says 183x171" in msg
    assert "re-export each at its image's size" in msg and "correct their width" not in msg
    with pytest.raises(ImageLoadError, match=r"correct their width/height in pan\.json"):
        check_image_headers([(png, (183, 171))], "pan.json", "images")


def _png16(path, values: list[int]):
    """A 16-bit grayscale PNG (PIL mode "I;16"), one row holding ``values``."""
    img = Image.new("I;16", (len(values), 1))
    for x, value in enumerate(values):
        img.putpixel((x, 0), value)
    return _save(img, path)


def test_16_bit_images_share_one_rule_and_narrow_data_is_warned_once(tmp_path, monkeypatch, caplog):
    """Every 16-bit image maps by value >> 8 (hand-computed: 300 -> 1, 4000 -> 15, 40000 -> 156,
    65535 -> 255), whatever its brightest pixel: value 255 is 0 beside 300 and beside 65535
    alike (it was 255 in an image whose peak was 255). Images peaking below 4096 (12-bit data)
    are warned about once, naming the first such file."""
    import logging

    monkeypatch.setattr(image_io, "_warned", set())
    cases = {
        "peak255.png": ([255, 0], [0, 0]),
        "peak300.png": ([255, 300], [0, 1]),
        "12bit.png": ([4000, 255], [15, 0]),
        "full.png": ([65535, 40000, 255], [255, 156, 0]),
    }
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.image_io"):
        for name, (values, expected) in cases.items():
            path = _png16(tmp_path / name, values)
            assert Image.open(path).mode == "I;16"
            out = np.asarray(load_rgb_image(path, "x.json"))
            assert out[0, :, 0].tolist() == expected and (out[..., 0] == out[..., 2]).all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1 and "peak255.png is 16-bit with a brightest value of 255" in warnings[0]
    )
    assert "value >> 4" in warnings[0]


def test_a_square_image_turned_by_exif_is_named_once_with_the_key(tmp_path, monkeypatch, caplog):
    """Decoding (the training split's only check): a 20x20 image with orientation 6 is read
    upright, and the first such file is named with data.exif_transpose; the second is not."""
    import logging

    monkeypatch.setattr(image_io, "_warned", set())
    img = Image.new("RGB", (20, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6
    paths = [_save(img, tmp_path / f"sq{i}.jpg", exif=exif) for i in range(2)]
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.image_io"):
        for path in paths:
            load_rgb_image(path, "a.json", expected_size=(20, 20))
        load_rgb_image(paths[0], "a.json", exif_transpose=False, expected_size=(20, 20))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1 and "sq0.jpg has an EXIF orientation that keeps its size" in warnings[0]
    )
    assert "set data.exif_transpose=false" in warnings[0]
