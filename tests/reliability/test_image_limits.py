"""An image over PIL's decompression-bomb limit fails naming the file, its pixel count and how to
raise the limit deliberately."""

from __future__ import annotations

import importlib

import pytest
from PIL import Image

from detr_lightning.data import image_io
from detr_lightning.data.errors import ImageLoadError


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
