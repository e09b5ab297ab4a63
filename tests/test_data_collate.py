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


def test_empty_list_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        collate([])
