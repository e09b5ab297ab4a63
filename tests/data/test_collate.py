"""collate(): padding, pixel_mask exactly on the real pixels, pad_to_multiple, Batch.to."""

import pickle

import pytest
import torch

from detr_lightning.data.collate import Batch, collate, make_collate_fn


def samples(sizes):
    out = []
    for i, (h, w) in enumerate(sizes):
        image = torch.rand(3, h, w) + 1.0  # strictly positive: padding (zeros) is recognisable
        target = {
            "labels": torch.tensor([i]),
            "boxes": torch.rand(1, 4),
            "size": torch.tensor([h, w]),
        }
        out.append((image, target))
    return out


@pytest.mark.parametrize(("multiple", "want_hw"), [(None, (37, 50)), (32, (64, 64)), (8, (40, 56))])
def test_padding_and_mask(multiple, want_hw):
    items = samples([(37, 20), (10, 50), (37, 50)])
    batch = collate(items, pad_to_multiple=multiple)
    assert batch.pixel_values.shape == (3, 3, *want_hw)
    assert batch.pixel_mask.shape == (3, *want_hw) and batch.pixel_mask.dtype == torch.bool
    for i, (image, _) in enumerate(items):
        h, w = image.shape[-2:]
        expected = torch.zeros(want_hw, dtype=torch.bool)
        expected[:h, :w] = True
        assert torch.equal(batch.pixel_mask[i], expected)
        assert torch.equal(batch.pixel_values[i, :, :h, :w], image)
        assert (batch.pixel_values[i][:, ~expected] == 0).all()
        assert batch.targets[i]["labels"].item() == i
        assert torch.equal(batch.pixel_mask[i], (batch.pixel_values[i] != 0).all(0))


def test_batch_to_moves_targets_and_collate_fn_pickles():
    batch = make_collate_fn(32)(samples([(5, 7)]))
    assert batch.pixel_values.shape[-2:] == (32, 32) and len(batch) == 1
    moved = batch.to("cpu", non_blocking=True)
    assert isinstance(moved, Batch) and moved.targets[0]["labels"].device.type == "cpu"
    fn = pickle.loads(pickle.dumps(make_collate_fn(16)))
    assert fn(samples([(5, 7)])).pixel_values.shape[-2:] == (16, 16)
    to_meta = batch.to("meta")
    assert to_meta.pixel_values.is_meta and to_meta.targets[0]["boxes"].is_meta


def test_pin_memory_pins_every_tensor_of_the_batch(monkeypatch):
    """DataLoader(pin_memory=True) calls Batch.pin_memory (no accelerator here: the pinning
    itself is replaced by a recorder, which returns each tensor + 1)."""
    pinned = []

    def record(t: torch.Tensor) -> torch.Tensor:
        pinned.append(t)
        return t + 1

    monkeypatch.setattr(torch.Tensor, "pin_memory", record)
    batch = make_collate_fn(32)(samples([(5, 7), (6, 4)]))
    out = batch.pin_memory()
    tensors = [batch.pixel_values, batch.pixel_mask]
    tensors += [v for t in batch.targets for v in t.values() if isinstance(v, torch.Tensor)]
    assert all(p is t for p, t in zip(pinned, tensors, strict=True))
    assert torch.equal(out.targets[1]["boxes"], batch.targets[1]["boxes"] + 1)
    assert torch.equal(out.pixel_values, batch.pixel_values + 1)


def test_empty_list_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        collate([])


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
