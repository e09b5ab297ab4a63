"""The prediction loop with a stand-in detector: records, skipped files, drawn mask segments."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.io import decode_image

from detr_lightning.data.transforms import make_eval_transforms
from detr_lightning.detr.postprocess import PostProcess
from detr_lightning.inference.draw import class_color
from detr_lightning.inference.image_search import find_images
from detr_lightning.inference.runner import DrawOptions, run_predictions


def fake_panoptic(pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
    """Two queries: query 0 is class 1 on the left half (box and mask), query 1 is no-object."""
    b, _, h, w = pixel_values.shape
    logits = torch.tensor([[0.0, 9.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]]).expand(b, -1, -1)
    boxes = torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0]]).expand(b, -1, -1)
    masks = torch.full((b, 2, h // 4, w // 4), -10.0)
    masks[:, 0, :, : w // 8] = 10.0
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}


def test_records_skipped_files_and_mask_segments(tmp_path) -> None:
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 64, 3), 128, np.uint8)).save(tmp_path / name)
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n broken")
    result = run_predictions(
        fake_panoptic, PostProcess(), find_images(tmp_path), make_eval_transforms(40, 80),
        [5, 6, 7], ["a", "b", "c"], draw_dir=tmp_path / "out", draw=DrawOptions(line_width=1),
        batch_size=3, progress=False,
    )  # fmt: skip
    assert [rec.file_name for rec, _ in result.images] == ["a.png", "b.png"]
    assert [rec.file_name for rec, _ in result.skipped] == ["c.png"]
    assert len(result.records) == 4 and result.records[0]["category_id"] == 6
    assert result.records[0]["bbox"] == [0.0, 0.0, 32.0, 40.0]
    drawn = decode_image(str(tmp_path / "out" / "a.png"))
    inside, outside = drawn[:, 25, 15], drawn[:, 25, 48]
    expected = 0.5 * 128 + 0.5 * torch.tensor(class_color(1), dtype=torch.float32)
    assert (inside.float() - expected).abs().max() <= 1  # the segment, in its class colour
    assert outside.tolist() == [128, 128, 128]  # query 1 scores low: not drawn


def test_inputs_differing_only_in_suffix_get_a_drawing_each(tmp_path) -> None:
    """x.png and x.jpg used to be drawn to the same drawn/x.png, the second over the first."""
    Image.fromarray(np.full((40, 64, 3), 30, np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(np.full((40, 64, 3), 220, np.uint8)).save(tmp_path / "x.jpg", quality=100)
    Image.fromarray(np.full((40, 64, 3), 128, np.uint8)).save(tmp_path / "y.jpg", quality=100)
    out = tmp_path / "out"
    result = run_predictions(
        fake_panoptic, PostProcess(), find_images(tmp_path), make_eval_transforms(40, 80),
        [5, 6, 7], draw_dir=out, draw=DrawOptions(score_threshold=1.0), progress=False,
    )  # fmt: skip
    assert len(result.images) == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "x.jpg.png", "x.png.png", "y.png"]  # fmt: skip
    assert sorted(p.name for p in result.drawn) == ["x.jpg.png", "x.png.png", "y.png"]
    for name, value in (("x.png.png", 30), ("x.jpg.png", 220), ("y.png", 128)):
        drawn = decode_image(str(out / name)).float()  # nothing scores 1.0: the image itself
        assert (drawn - value).abs().max() <= 2, name


def test_exif_transpose_false_reads_images_as_stored(tmp_path) -> None:
    """data.exif_transpose=false was ignored: predict read EXIF-rotated images upright, unlike
    the data module (eval), so boxes and sizes were of other pixels than the run's."""
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees: upright 40 wide x 64 high
    Image.fromarray(np.full((40, 64, 3), 128, np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    sizes = {}
    for upright in (True, False):
        result = run_predictions(
            fake_panoptic, PostProcess(), find_images(tmp_path), make_eval_transforms(40, 80),
            [5, 6, 7], progress=False, exif_transpose=upright,
        )  # fmt: skip
        ((_, sizes[upright]),) = result.images
        box = result.records[0]["bbox"]  # query 0: the left half of the image read
        assert box == [0.0, 0.0, sizes[upright][1] / 2, sizes[upright][0]]
    assert sizes == {True: (64, 40), False: (40, 64)}  # (h, w)


def test_batches_are_padded_to_data_pad_to_multiple(tmp_path) -> None:
    """data.pad_to_multiple was accepted and ignored: predict padded batches otherwise than the
    evaluation (padding changes DETR's features), so its outputs differed from eval's."""
    Image.fromarray(np.full((40, 64, 3), 128, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((50, 30, 3), 128, np.uint8)).save(tmp_path / "b.png")
    shapes = []

    def forward(pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
        shapes.append(tuple(pixel_values.shape[-2:]))
        assert pixel_mask.shape[-2:] == pixel_values.shape[-2:]
        return fake_panoptic(pixel_values, pixel_mask)

    for multiple in (None, 32):
        result = run_predictions(
            forward, PostProcess(), find_images(tmp_path), make_eval_transforms(40, 80),
            [5, 6, 7], progress=False, batch_size=2, pad_to_multiple=multiple,
        )  # fmt: skip
        # boxes stay relative to each original image
        assert result.records[0]["bbox"] == [0.0, 0.0, 32.0, 40.0]
    assert shapes == [(66, 64), (96, 64)]  # a 40x64 and a 66x40 image


def _two_boxes(pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
    """No masks: query 0 is class 1 on the left half (the better score), query 1 class 2 on the
    right half."""
    b = pixel_values.shape[0]
    logits = torch.tensor([[0.0, 9.0, 0.0, 0.0], [0.0, 0.0, 7.0, 0.0]]).expand(b, -1, -1)
    boxes = torch.tensor([[0.25, 0.5, 0.4, 0.8], [0.75, 0.5, 0.4, 0.8]]).expand(b, -1, -1)
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_drawing_follows_its_options(tmp_path) -> None:
    """enabled=False writes no PNG (the records still come); top_k=1 draws the best one only."""
    Image.fromarray(np.full((40, 64, 3), 128, np.uint8)).save(tmp_path / "a.png")
    args = (_two_boxes, PostProcess(), find_images(tmp_path), make_eval_transforms(40, 80),
            [5, 6, 7])  # fmt: skip
    off = run_predictions(*args, draw_dir=tmp_path / "off", draw=DrawOptions(enabled=False),
                          progress=False)  # fmt: skip
    assert len(off.records) == 2 and off.drawn == [] and not (tmp_path / "off").exists()
    run_predictions(*args, draw_dir=tmp_path / "one", draw=DrawOptions(top_k=1),
                          progress=False)  # fmt: skip
    drawn = decode_image(str(tmp_path / "one" / "a.png"))
    assert (drawn[:, 4:36, :32] != 128).any()  # the best box (left half) is drawn
    assert (drawn[:, :, 40:] == 128).all()  # the other one (x 35 to 61) is not


def test_masks_of_a_padded_image_are_cropped_to_its_part_of_the_canvas(tmp_path) -> None:
    """A batch of a 40 x 80 and a 40 x 40 image: the second fills the left half of the 40 x 80
    canvas, right padding beside it. The stand-in's mask is the canvas's left quarter (columns
    0-19), so on the 40 x 40 image it covers columns 0-19, half the image; reading the whole
    canvas as the image (no crop of the padding) would squeeze it into columns 0-9."""
    Image.fromarray(np.full((40, 80, 3), 128, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(tmp_path / "b.png")

    def left_quarter_of_canvas(pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
        b, _, h, w = pixel_values.shape
        assert (h, w) == (40, 80)  # one batch: b.png padded to a.png's width
        logits = torch.tensor([[0.0, 9.0, 0.0, 0.0]]).expand(b, -1, -1)
        boxes = torch.tensor([[0.25, 0.5, 0.5, 1.0]]).expand(b, -1, -1)  # each image's left half
        masks = torch.full((b, 1, h // 4, w // 4), -10.0)
        masks[..., : w // 16] = 10.0
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}

    run_predictions(
        left_quarter_of_canvas, PostProcess(), find_images(tmp_path), make_eval_transforms(40, 80),
        [5, 6, 7], draw_dir=tmp_path / "out", draw=DrawOptions(line_width=1), batch_size=2,
        progress=False,
    )  # fmt: skip
    filled = (0.5 * 128 + 0.5 * torch.tensor(class_color(1), dtype=torch.float32)).round()
    row = decode_image(str(tmp_path / "out" / "b.png"))[:, 30].T.float()  # [40, 3]; no label
    # column 0 and 20: the box's outline (x 0 to 20); between them the mask, right of it none
    assert ((row[1:20] - filled).abs() <= 1).all(), row[1:20].tolist()
    assert (row[21:] == 128).all(), row[21:].tolist()
    # the unpadded image is the canvas: the mask is its columns 0-19 too (box outline at 40)
    whole = decode_image(str(tmp_path / "out" / "a.png"))[:, 30].T.float()
    assert ((whole[1:20] - filled).abs() <= 1).all() and (whole[20:40] == 128).all()


def test_panoptic_segments_of_a_padded_image_are_cropped_to_its_part_of_the_canvas(
    tmp_path,
) -> None:
    """predict's panoptic PNGs on the same batch: a thing query on the canvas's left quarter
    and a stuff query on the rest. On the 40 x 40 image (padded to 80 wide) the thing segment
    is columns 0-19 and the stuff one 20-39; reading the canvas as the image would put the
    boundary at column 10."""
    from detr_lightning.data.panoptic_png import rgb_to_ids
    from detr_lightning.detr.panoptic_postprocess import PostProcessPanoptic
    from detr_lightning.inference.panoptic_output import PanopticWriter

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((40, 80, 3), 128, np.uint8)).save(images / "a.png")
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(images / "b.png")

    def thing_left_stuff_right(pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
        b, _, h, w = pixel_values.shape
        logits = torch.tensor([[0.0, 9.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0]]).expand(b, -1, -1)
        boxes = torch.tensor([[0.125, 0.5, 0.25, 1.0], [0.625, 0.5, 0.75, 1.0]]).expand(b, -1, -1)
        masks = torch.full((b, 2, h // 4, w // 4), -10.0)
        masks[:, 0, :, : w // 16] = 10.0
        masks[:, 1, :, w // 16 :] = 10.0
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}

    writer = PanopticWriter(tmp_path / "panoptic",
                            PostProcessPanoptic({1: True, 2: False}, min_area=1), [5, 6, 7])  # fmt: skip
    run_predictions(
        thing_left_stuff_right, PostProcess(), find_images(images), make_eval_transforms(40, 80),
        [5, 6, 7], batch_size=2, progress=False, panoptic=writer,
    )  # fmt: skip
    segments = {a["file_name"]: a["segments_info"] for a in writer.annotations}
    for name, width in (("b.png", 40), ("a.png", 80)):
        ids = rgb_to_ids(np.asarray(Image.open(tmp_path / "panoptic" / name)))
        by_category = {s["category_id"]: s["id"] for s in segments[name]}
        expected = np.full((40, width), by_category[7])  # label 2: category 7, stuff
        expected[:, :20] = by_category[6]  # label 1: category 6, the thing
        assert ids.shape == (40, width) and (ids == expected).all(), name
