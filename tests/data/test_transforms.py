"""Transforms keep boxes consistent with the pixels; flip/crop/resize edge cases."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from detr_lightning.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_SCALES,
    DropEmptyBoxes,
    NormalizeImage,
    RandomSizeCrop,
    boxes_to_normalized_cxcywh,
    denormalize,
    make_eval_transforms,
    make_train_transforms,
    mask_boxes,
)

SMALL = dict(
    scales=(96, 112, 128), max_size=200, crop_resize_scales=(100, 120), crop_size=(50, 100)
)


def target_for(boxes, size_hw, labels=None):
    n = len(boxes)
    labels = torch.arange(n) if labels is None else torch.as_tensor(labels)
    return {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=size_hw
        ),
        "labels": labels,
        "iscrowd": (labels == 1).long(),
        "area": (labels + 1).float() * 10,
    }


def unnormalise(image: torch.Tensor) -> torch.Tensor:
    return (
        image * torch.tensor(IMAGENET_STD)[:, None, None]
        + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )


def mask_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def rgb_boxes_image():
    """Black 200x150 image with one pure red, green and blue rectangle (label = channel)."""
    boxes = [[10, 10, 60, 50], [120, 30, 190, 140], [70, 90, 110, 120]]
    arr = np.zeros((150, 200, 3), np.uint8)
    for c, (x1, y1, x2, y2) in enumerate(boxes):
        arr[y1:y2, x1:x2, c] = 255
    return Image.fromarray(arr), boxes


def test_train_transforms_keep_boxes_on_the_drawn_rectangles():
    img, boxes = rgb_boxes_image()
    tf = make_train_transforms(**SMALL)
    removed = resized = 0
    for seed in range(60):
        torch.manual_seed(seed)
        image, t = tf(img, target_for(boxes, (150, 200)))
        h, w = image.shape[-2:]
        resized += (h, w) != (150, 200)
        norm = boxes_to_normalized_cxcywh(t["boxes"])
        assert ((norm >= 0) & (norm <= 1)).all()
        b = t["boxes"].as_subclass(torch.Tensor)
        assert (
            (b[:, 0] >= 0).all()
            and (b[:, 2] <= w).all()
            and (b[:, 1] >= 0).all()
            and (b[:, 3] <= h).all()
        )
        # per-box fields stay aligned with their boxes
        assert torch.equal(t["area"], (t["labels"] + 1).float() * 10)
        assert torch.equal(t["iscrowd"], (t["labels"] == 1).long())
        pixels = unnormalise(image) > 0.5
        for label in range(3):
            kept = (t["labels"] == label).nonzero().flatten()
            if len(kept):
                got = mask_box(pixels[label])
                assert np.allclose(got, b[kept[0]].tolist(), atol=2.0), (
                    seed,
                    label,
                    got,
                    b[kept[0]],
                )
            else:
                removed += 1
                m = pixels[label]
                assert not m.any()  # cropped away: nothing of it left in the picture
    assert removed > 0 and resized > 0  # the crop/removal paths were exercised


def test_flip_is_exact():
    arr = np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8)
    tf = make_train_transforms(scales=[60], max_size=None, flip_prob=1.0, crop_prob=0.0)
    image, t = tf(Image.fromarray(arr), target_for([[10, 20, 30, 40], [0, 0, 100, 60]], (60, 100)))
    assert t["boxes"].as_subclass(torch.Tensor).tolist() == [[70, 20, 90, 40], [0, 0, 100, 60]]
    want = torch.from_numpy(np.ascontiguousarray(arr[:, ::-1])).permute(2, 0, 1) / 255
    torch.testing.assert_close(unnormalise(image), want, atol=1e-5, rtol=0)


def test_crop_clips_cut_boxes_and_removes_boxes_outside_with_their_fields():
    crop = RandomSizeCrop(30, 60)
    pipeline = v2.Compose([crop, v2.ClampBoundingBoxes(), DropEmptyBoxes()])
    boxes = torch.tensor(
        [[0, 0, 100, 80], [5, 5, 25, 20], [70, 50, 98, 78], [40, 30, 55, 45]], dtype=torch.float32
    )
    image = tv_tensors.Image(torch.zeros(3, 80, 100, dtype=torch.uint8))
    seen_removed = seen_cut = False
    for seed in range(40):
        torch.manual_seed(seed)
        p = crop.make_params([image])
        torch.manual_seed(seed)
        out, t = pipeline(image, target_for(boxes.tolist(), (80, 100)))
        assert out.shape[-2:] == (p["height"], p["width"])
        assert 30 <= p["height"] <= 60 and 30 <= p["width"] <= 60
        # independent expectation: shift by the crop origin, clip, drop boxes without area
        shifted = boxes - torch.tensor([p["left"], p["top"], p["left"], p["top"]])
        lim = torch.tensor([p["width"], p["height"], p["width"], p["height"]])
        clipped = torch.minimum(shifted.clamp(min=0), lim)
        keep = ((clipped[:, 2] - clipped[:, 0]) > 0) & ((clipped[:, 3] - clipped[:, 1]) > 0)
        torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor), clipped[keep])
        assert t["labels"].tolist() == keep.nonzero().flatten().tolist()
        assert torch.equal(t["area"], (t["labels"] + 1).float() * 10)
        seen_removed |= not keep.all()
        seen_cut |= bool((clipped[keep] != shifted[keep]).any())
    assert seen_removed and seen_cut


def test_training_keeps_a_box_a_resize_made_thinner_than_a_pixel():
    """The official rule: only a crop that leaves a box no area removes it. A 1.2 x 30 px box in
    a 640 x 480 image resized to a shorter side of 240 is 0.6 x 15 px, and stays a target."""
    tf = make_train_transforms(scales=[240], max_size=None, flip_prob=0.0, crop_prob=0.0)
    boxes = [[100, 100, 101.2, 130], [300, 200, 400, 300]]
    _, t = tf(Image.new("RGB", (640, 480)), target_for(boxes, (480, 640)))
    torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor), torch.tensor(boxes) / 2)
    assert t["labels"].tolist() == [0, 1] and t["area"].tolist() == [10.0, 20.0]


def test_random_size_crop_on_an_image_smaller_than_the_crop():
    image = tv_tensors.Image(torch.zeros(3, 20, 30, dtype=torch.uint8))
    out = RandomSizeCrop(384, 600)(image)
    assert out.shape[-2:] == (20, 30)
    with pytest.raises(ValueError, match="min_size <= max_size"):
        RandomSizeCrop(600, 384)


@pytest.mark.parametrize(
    ("wh", "want_hw"),
    [((640, 480), (800, 1066)), ((2000, 500), (333, 1333)), ((300, 900), (1333, 444))],
)
def test_eval_transforms_resize_and_keep_every_box(wh, want_hw):
    w, h = wh
    boxes = [[0, 0, w, h], [w / 2, h / 2, w / 2 + 0.3, h / 2 + 0.3]]  # a 0.3 px box survives
    image, t = make_eval_transforms()(Image.new("RGB", wh), target_for(boxes, (h, w)))
    assert tuple(image.shape[-2:]) == want_hw
    scale = torch.tensor([want_hw[1] / w, want_hw[0] / h] * 2)
    torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor), torch.tensor(boxes) * scale)
    assert t["labels"].tolist() == [0, 1]


def test_paper_defaults_give_paper_sizes():
    img = Image.new("RGB", (640, 480))
    tf = make_train_transforms()
    sizes = set()
    for seed in range(12):
        torch.manual_seed(seed)
        image, _ = tf(img, target_for([[10, 10, 600, 400]], (480, 640)))
        h, w = image.shape[-2:]
        assert min(h, w) in PAPER_SCALES and max(h, w) <= 1333
        sizes.add((h, w))
    assert len(sizes) > 3


def test_boxes_to_normalized_cxcywh():
    b = tv_tensors.BoundingBoxes([[10, 20, 30, 60]], format="XYXY", canvas_size=(100, 50))
    torch.testing.assert_close(boxes_to_normalized_cxcywh(b), torch.full((1, 4), 0.4))
    b = tv_tensors.BoundingBoxes([[10, 20, 20, 40]], format="XYWH", canvas_size=(100, 50))
    torch.testing.assert_close(boxes_to_normalized_cxcywh(b), torch.full((1, 4), 0.4))


def test_denormalize_inverts_normalize_on_the_real_part_of_a_padded_image() -> None:
    image = torch.randint(
        0, 256, (3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    normalised = NormalizeImage()(tv_tensors.Image(image)).as_subclass(torch.Tensor)
    padded = torch.full((3, 8, 9), 7.0)
    padded[:, :5, :7] = normalised
    assert torch.equal(denormalize(padded, (5, 7)), image)


def test_mask_boxes_run_along_pixel_edges() -> None:
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 2, 3] = True  # one pixel at y=2, x=3 covers [3, 4] x [2, 3]
    assert mask_boxes(mask).tolist() == [[3.0, 2.0, 4.0, 3.0]]


def test_training_resize_keeps_the_long_side_under_max_size():
    # torchvision's rule: scale = min(800 / 100, 1333 / 1000), short side 100 * 1.333 -> 133
    tf = make_train_transforms(scales=(800,), max_size=1333, flip_prob=0.0, crop_prob=0.0)
    image, _ = tf(Image.new("RGB", (1000, 100)), target_for([[10, 10, 500, 90]], (100, 1000)))
    h, w = image.shape[-2:]
    assert w <= 1333 and h == 133


def test_random_size_crop_reaches_every_size_and_position():
    # uniform over the closed ranges: widths/heights {3, 4, 5}, a width-3 window's left {0, 1, 2}
    crop = RandomSizeCrop(3, 5)
    flat = [tv_tensors.Image(torch.zeros(3, 5, 5, dtype=torch.uint8))]
    torch.manual_seed(0)
    draws = [crop.make_params(flat) for _ in range(500)]
    assert {d["width"] for d in draws} == {3, 4, 5} == {d["height"] for d in draws}
    assert {d["left"] for d in draws if d["width"] == 3} == {0, 1, 2}
    assert {d["top"] for d in draws if d["height"] == 3} == {0, 1, 2}
    assert all(d["left"] + d["width"] <= 5 and d["top"] + d["height"] <= 5 for d in draws)


def test_denormalize_clamps_to_the_uint8_range() -> None:
    # normalised +10 is far above white (mean + 10 std > 1) and -10 far below black: 255 and 0
    pixels = torch.stack([torch.full((3, 2), 10.0), torch.full((3, 2), -10.0)], 1)
    out = denormalize(pixels, (2, 2))
    assert (out[:, 0] == 255).all() and (out[:, 1] == 0).all()
