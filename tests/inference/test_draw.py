"""Drawing detections: pixels change where the shown boxes are, and nowhere else."""

from __future__ import annotations

import torch

from detr_lightning.inference.draw import (
    class_color,
    draw_predictions,
    query_detections,
    select_detections,
)


def _image() -> torch.Tensor:
    return torch.full((3, 60, 80), 128, dtype=torch.uint8)


def test_drawn_image_differs_from_its_input_where_boxes_are() -> None:
    image = _image()
    pred = {
        "boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0], [50.0, 35.0, 75.0, 55.0]]),
        "scores": torch.tensor([0.9, 0.1]),  # the second is under the threshold
        "labels": torch.tensor([0, 1]),
    }
    out = draw_predictions(image, pred, [3, 4], ["cat", "dog"], score_threshold=0.5)
    assert out.shape == image.shape and out.dtype == torch.uint8
    assert torch.equal(image, _image())  # the input is left alone
    changed = (out != image).any(0)
    assert changed[10, 10:41].all() and changed[10:31, 40].all()  # the shown box's outline
    assert not changed[36:55, 51:75].any()  # the low-scoring box is not drawn
    assert not changed[45:, :45].any()  # far from every box: untouched
    assert tuple(out[:, 30, 25].tolist()) == class_color(0)  # its class colour


def test_masks_are_filled_in_the_class_colour_and_top_k_limits_the_boxes() -> None:
    image = _image()
    masks = torch.zeros(2, 60, 80, dtype=torch.bool)
    masks[0, 40:50, 5:15] = True
    pred = {
        "boxes": torch.tensor([[5.0, 40.0, 15.0, 50.0], [50.0, 5.0, 70.0, 25.0]]),
        "scores": torch.tensor([0.8, 0.7]),
        "labels": torch.tensor([2, 0]),
        "masks": masks,
    }
    out = draw_predictions(image, pred, [1, 2, 3], None, score_threshold=0.5, top_k=1)
    assert (out[:, 44, 10] != image[:, 44, 10]).any()  # inside the segment
    assert torch.equal(out[:, 5:26, 50:71], image[:, 5:26, 50:71])  # top_k=1: one object
    assert select_detections(torch.tensor([0.2, 0.9, 0.6]), 0.5).tolist() == [1, 2]


def test_font_size_alone_sizes_the_labels() -> None:
    """A size without a font file draws with a TrueType font at that size: the white label
    text grows with it (rows and columns holding white pixels)."""
    pred = {"boxes": torch.tensor([[10.0, 10.0, 70.0, 55.0]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([0])}  # fmt: skip

    def text_extent(font_size: int) -> tuple[int, int]:
        out = draw_predictions(_image(), pred, [3], ["cat"], font_size=font_size)
        white = (out == 255).all(0)
        return int(white.any(1).sum()), int(white.any(0).sum())

    (small_h, small_w), (large_h, large_w) = text_extent(12), text_extent(24)
    assert 0 < small_h < large_h and 0 < small_w < large_w


def test_the_draw_threshold_keeps_a_score_equal_to_it() -> None:
    assert select_detections(torch.tensor([0.5, 0.7, 0.2]), 0.5).tolist() == [1, 0]


def test_query_detections_scale_x_by_width_and_y_by_height() -> None:
    out = {"pred_logits": torch.tensor([[[2.0, 0.0]]]),
           "pred_boxes": torch.tensor([[[0.5, 0.5, 0.5, 0.5]]])}  # fmt: skip
    (det,) = query_detections(out, torch.tensor([[100, 200]]))  # h 100, w 200
    assert det["boxes"].tolist() == [[50.0, 25.0, 150.0, 75.0]]


def test_the_best_of_detections_sharing_a_box_is_drawn_on_top() -> None:
    """A query with two labels (sigmoid scoring) has one box: its lower-scoring label used to
    be drawn last, over the best one, so the drawing showed the wrong class."""
    image = _image()
    box = torch.tensor([10.0, 20.0, 60.0, 50.0])
    pred = {"boxes": torch.stack([box, box]), "scores": torch.tensor([0.9, 0.6]),
            "labels": torch.tensor([0, 1])}  # fmt: skip
    out = draw_predictions(image, pred, [3, 4], ["cat", "dog"], score_threshold=0.5)
    best, other = torch.tensor(class_color(0)), torch.tensor(class_color(1))
    # the outline's pixels (no label box covers the bottom edge)
    edge = out[:, 50, 15:55].T.int()
    assert (edge == best).all(1).all() and not (edge == other).all(1).any()


def test_instance_masks_read_only_the_images_part_of_the_padded_canvas() -> None:
    """An 8 x 8 canvas whose image is its top 4 x 8 (padding below), mask logits positive on
    the image and negative on the padding: at the original 4 x 8 size the mask is all True."""
    from detr_lightning.inference.draw import instance_masks

    logits = torch.full((1, 8, 8), -10.0)
    logits[0, :4] = 10.0
    mask = instance_masks(logits, canvas=(8, 8), size=(4, 8), orig_size=(4, 8))
    assert mask.shape == (1, 4, 8) and mask.all()


def test_a_box_past_the_right_edge_is_clamped_by_the_width() -> None:
    """80 px wide, 60 high: the box [70, 10, 200, 50] is drawn from column 70 to column 79
    (x clamped to width - 1), not from column 59 (height - 1)."""
    image = _image()
    pred = {"boxes": torch.tensor([[70.0, 10.0, 200.0, 50.0]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([0])}  # fmt: skip
    changed = (draw_predictions(image, pred, [3], ["cat"]) != image).any(0)
    assert changed[30:45, 70].all() and changed[30:45, 79].all()
    assert not changed[30:45, 55:68].any()
