"""IndexedImageDataset: the sample pipeline shared by the detection and panoptic datasets, on a
minimal subclass over one hand-made image."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from detr_lightning.data.indexed_images import IndexedImageDataset


class _OneImage(IndexedImageDataset):
    def __init__(self, folder, transforms, with_masks: bool) -> None:
        self.img_folder, self.ann_file, self.exif_transpose = folder, folder / "ann.json", True
        self.transforms, self.with_masks = transforms, with_masks
        self._index = SimpleNamespace(
            file_names=["a.png"], sizes=np.array([[40, 60]]), image_ids=np.array([7])
        )
        self._set_categories([{"id": 3, "name": "x"}, {"id": 9, "name": "y"}], None, False)

    def raw_target(self, idx: int) -> dict:
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.tensor([[6.0, 4.0, 36.0, 24.0]]), format="XYXY", canvas_size=(40, 60)
            ),
            "labels": torch.tensor([1]),
        }
        if self.with_masks:
            mask = torch.zeros(1, 40, 60, dtype=torch.uint8)
            mask[0, 4:24, 6:36] = 1
            target["masks"] = tv_tensors.Mask(mask)
        return target


@pytest.mark.parametrize("with_masks", [False, True])
def test_sample_has_normalised_cxcywh_boxes_and_both_sizes(tmp_path, with_masks: bool) -> None:
    Image.new("RGB", (60, 40), (10, 20, 30)).save(tmp_path / "a.png")
    # Half size: 30 x 20; the box (6, 4, 36, 24) becomes (3, 2, 18, 12) in 30 x 20 pixels.
    resize = v2.Compose([v2.ToImage(), v2.Resize((20, 30)), v2.ToDtype(torch.float32, True)])
    ds = _OneImage(tmp_path, resize, with_masks)
    assert len(ds) == 1 and ds.image_ids == [7]
    assert ds.label_to_category_id == [3, 9] and ds.num_classes == 2
    image, target = ds[0]
    assert image.shape == (3, 20, 30)
    cx, cy, w, h = (3 + 18) / 2 / 30, (2 + 12) / 2 / 20, 15 / 30, 10 / 20
    torch.testing.assert_close(target["boxes"], torch.tensor([[cx, cy, w, h]]))
    assert target["image_id"].item() == 7
    assert target["orig_size"].tolist() == [40, 60] and target["size"].tolist() == [20, 30]
    if with_masks:
        assert target["masks"].dtype == torch.bool and type(target["masks"]) is torch.Tensor
        assert target["masks"].shape == (1, 20, 30) and target["masks"].sum().item() == 15 * 10
    else:
        assert "masks" not in target


def test_given_label_map_is_kept(tmp_path) -> None:
    ds = _OneImage(tmp_path, None, False)
    ds._set_categories([{"id": 3, "name": "x"}], [9, 3], False)
    assert ds.label_to_category_id == [9, 3] and ds.num_classes == 2
