"""collate() pads panoptic target masks to the batch canvas (False on padding)."""

import pytest
import torch

from detr_lightning.data.collate import collate


def sample(h: int, w: int, t: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    masks = torch.rand(t, h, w) > 0.5
    return torch.rand(3, h, w), {
        "masks": masks,
        "labels": torch.arange(t),
        "image_id": torch.tensor(h),
    }


@pytest.mark.parametrize(("multiple", "canvas"), [(None, (9, 12)), (8, (16, 16))])
def test_masks_are_padded_to_the_canvas(multiple: int | None, canvas: tuple[int, int]) -> None:
    items = [sample(9, 5, 2), sample(4, 12, 0), sample(7, 7, 3)]
    batch = collate(items, pad_to_multiple=multiple)
    assert batch.pixel_values.shape[-2:] == canvas
    for (_, src), out in zip(items, batch.targets, strict=True):
        t, h, w = src["masks"].shape
        got = out["masks"]
        assert got.shape == (t, *canvas) and got.dtype == torch.bool
        assert torch.equal(got[:, :h, :w], src["masks"])
        assert not got[:, h:].any() and not got[:, :, w:].any()
        assert src["masks"].shape == (t, h, w)  # the sample's own target is not modified
        assert torch.equal(out["labels"], src["labels"])


def test_targets_without_masks_are_unchanged() -> None:
    image = torch.rand(3, 4, 6)
    target = {"labels": torch.tensor([1]), "boxes": torch.rand(1, 4)}
    out = collate([(image, target), (torch.rand(3, 8, 2), dict(target))]).targets[0]
    assert out.keys() == target.keys() and out is not target


def test_masks_of_another_size_are_an_error() -> None:
    image, target = sample(6, 6, 1)
    target["masks"] = target["masks"][:, :5]
    with pytest.raises(ValueError, match=r"image_id 6 has masks of shape \(1, 5, 6\); expected "
                                         r"\[T, 6, 6\]"):  # fmt: skip
        collate([(image, target)])
