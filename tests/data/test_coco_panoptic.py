"""CocoPanopticDataset: masks/boxes/labels from hand-made PNGs, consistency through the
transforms, crowd kept, named errors, the shapes panoptic split, the datamodule and configs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from detr_lightning.data.coco_panoptic import CocoPanopticDataset
from detr_lightning.data.datamodule import PanopticDataModule
from detr_lightning.data.errors import DatasetFormatError, ImageLoadError
from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.data.transforms import (
    RandomSizeCrop,
    _finish,
    make_eval_transforms,
    make_train_transforms,
    mask_boxes,
)

CATEGORIES = [
    {"id": 1, "name": "cat", "isthing": 1},
    {"id": 3, "name": "dog", "isthing": 1},
    {"id": 10, "name": "sky", "isthing": 0},
]
SKY, CAT, DOG = 700, 1 + 3 * 256**2, 5  # 700 = 188 + 256 * 2: ids use all three channels
THIN, L_STUFF = 9, 4000


def image_one() -> tuple[np.ndarray, list[dict]]:
    """20 x 30: sky on rows 0-9 (but the dog), a cat rectangle, a crowd of dogs, VOID elsewhere."""
    ids = np.zeros((20, 30), np.int64)
    ids[0:10, :] = SKY
    ids[2:7, 20:28] = DOG
    ids[12:18, 4:10] = CAT
    segs = [{"id": SKY, "category_id": 10, "iscrowd": 0, "area": int((ids == SKY).sum())},
            {"id": CAT, "category_id": 1, "iscrowd": 0, "area": 36},
            {"id": DOG, "category_id": 3, "iscrowd": 1, "area": 40}]  # fmt: skip
    return ids, segs


def image_two() -> tuple[np.ndarray, list[dict]]:
    """16 x 24: an L-shaped stuff region, a one-pixel-wide cat, a small dog."""
    ids = np.zeros((16, 24), np.int64)
    ids[:, 0:4] = L_STUFF
    ids[12:16, :] = L_STUFF
    ids[2:10, 10] = THIN
    ids[1:4, 5:7] = DOG + 1
    segs = [{"id": L_STUFF, "category_id": 10}, {"id": THIN, "category_id": 1},
            {"id": DOG + 1, "category_id": 3}]  # fmt: skip
    return ids, segs


def rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], -1).astype(np.uint8)


def write_split(root: Path, split: str, images: list[tuple[np.ndarray, list[dict]]]) -> Path:
    """COCO panoptic layout: root/{split}/, root/annotations/panoptic_{split}.json + PNG folder."""
    (root / split).mkdir(parents=True)
    pngs = root / "annotations" / f"panoptic_{split}"
    pngs.mkdir(parents=True)
    recs, anns = [], []
    for k, (ids, segs) in enumerate(images, start=1):
        h, w = ids.shape
        Image.fromarray(np.full((h, w, 3), 40 * k, np.uint8)).save(root / split / f"{k:06d}.jpg")
        Image.fromarray(rgb(ids)).save(pngs / f"{k:06d}.png")
        recs.append({"id": k, "file_name": f"{k:06d}.jpg", "width": w, "height": h})
        anns.append({"image_id": k, "file_name": f"{k:06d}.png", "segments_info": segs})
    ann = root / "annotations" / f"panoptic_{split}.json"
    ann.write_text(json.dumps({"images": recs, "annotations": anns, "categories": CATEGORIES}))
    return ann


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    write_split(tmp_path, "train", [image_one(), image_two(), (np.zeros((8, 8), np.int64), [])])
    return tmp_path


def dataset(root: Path, **kwargs) -> CocoPanopticDataset:
    return CocoPanopticDataset(root / "train", root / "annotations/panoptic_train.json", **kwargs)


def edited_json(root: Path, edit) -> None:
    path = root / "annotations/panoptic_train.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_targets_match_the_hand_made_segments(tiny: Path) -> None:
    ds = dataset(tiny)
    assert (ds.num_classes, ds.label_to_category_id, ds.is_thing) == (3, [1, 3, 10],
                                                                      [True, True, False])  # fmt: skip
    assert len(ds) == 3 and ds.png_folder == tiny / "annotations/panoptic_train"
    image, t = ds[0]
    ids, _ = image_one()
    assert image.shape == (3, 20, 30) and image.dtype == torch.float32
    want = torch.from_numpy(np.stack([ids == s for s in (SKY, CAT, DOG)]))
    assert t["masks"].dtype == torch.bool and type(t["masks"]) is torch.Tensor
    assert torch.equal(t["masks"], want)
    assert t["labels"].tolist() == [2, 0, 1] and t["iscrowd"].tolist() == [0, 0, 1]  # crowd kept
    assert t["area"].tolist() == [want[i].sum().item() for i in range(3)]
    xyxy = torch.tensor([[0, 0, 30, 10], [4, 12, 10, 18], [20, 2, 28, 7]], dtype=torch.float32)
    scale = torch.tensor([30, 20, 30, 20])
    assert torch.allclose(t["boxes"], box_convert(xyxy, "xyxy", "cxcywh") / scale)
    assert t["image_id"].item() == 1 and t["orig_size"].tolist() == t["size"].tolist() == [20, 30]
    thin = ds[1][1]  # a one-pixel-wide segment keeps a 1-px wide box
    assert thin["labels"].tolist() == [2, 0, 1]
    assert thin["boxes"][1, 2].item() == pytest.approx(1 / 24)
    empty = ds[2][1]  # all VOID: a negative
    assert empty["masks"].shape == (0, 8, 8) and empty["boxes"].shape == (0, 4)
    assert len(dataset(tiny, keep_empty=False)) == 2


def test_ground_truth_is_the_original_id_map_and_segments_info(tiny: Path) -> None:
    ds = dataset(tiny, transforms=make_eval_transforms(40, 100))
    gt = ds.ground_truth(1)
    assert (
        torch.equal(gt["ids"], torch.from_numpy(image_one()[0])) and gt["ids"].dtype == torch.int64
    )
    assert gt["segments_info"][1] == {"id": CAT, "category_id": 1, "iscrowd": 0, "isthing": 1,
                                      "area": 36}  # fmt: skip
    assert "area" not in ds.ground_truth(2)["segments_info"][0] and "000001.png" in gt["name"]
    with pytest.raises(KeyError, match="image_id 99"):
        ds.ground_truth(99)


@pytest.mark.parametrize("short_side", [40, 13])  # x2 exactly; x0.65 (nearest rounds)
def test_flip_and_resize_move_masks_and_boxes_together(tiny: Path, short_side: int) -> None:
    tf = make_train_transforms([short_side], None, [short_side], [8, 8], flip_prob=1.0,
                               crop_prob=0.0)  # fmt: skip
    ds = dataset(tiny, transforms=tf)
    raw = ds.raw_target(0)
    _, t = ds[0]
    h, w = t["size"].tolist()
    assert t["masks"].shape == (3, h, w) and h == short_side
    expected = F.resize(F.horizontal_flip(raw["boxes"]), [h, w])  # the boxes' own geometry
    boxes = box_convert(t["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
    assert torch.allclose(boxes, mask_boxes(t["masks"]), atol=1e-4)
    assert (boxes - expected).abs().max() <= 1.0
    if short_side == 40:  # nearest x2 is exact: each pixel becomes a 2 x 2 block
        flipped = raw["masks"].flip(-1).bool()
        assert torch.equal(t["masks"], flipped.repeat_interleave(2, 1).repeat_interleave(2, 2))


class FixedCrop(RandomSizeCrop):
    def make_params(self, flat_inputs):
        return dict(top=0, left=0, height=10, width=8)


def test_crop_drops_emptied_segments_and_tightens_boxes(tiny: Path) -> None:
    tf = v2.Compose([v2.ToImage(), FixedCrop(1, 1), *_finish(True)])
    _, t = dataset(tiny, transforms=tf)[1]
    # the thin cat (column 10) is outside the window; the L keeps only its vertical arm
    assert t["labels"].tolist() == [2, 1] and t["masks"].shape == (2, 10, 8)
    boxes = box_convert(t["boxes"], "cxcywh", "xyxy") * torch.tensor([8, 10, 8, 10])
    tight = torch.tensor([[0.0, 0, 4, 10], [5, 1, 7, 4]])  # not the clamped [0, 0, 8, 10]
    assert torch.allclose(boxes, tight, atol=1e-5)
    assert len(t["iscrowd"]) == len(t["area"]) == 2


def test_random_train_crops_keep_every_field_consistent(tiny: Path) -> None:
    tf = make_train_transforms([12, 16], 40, [14, 18], [5, 9], crop_prob=1.0)
    ds = dataset(tiny, transforms=tf)
    for trial in range(30):
        _, t = ds[trial % 2]
        h, w = t["size"].tolist()
        n = len(t["labels"])
        assert t["masks"].shape == (n, h, w) and t["masks"].flatten(1).any(1).all()
        assert len(t["boxes"]) == len(t["iscrowd"]) == len(t["area"]) == n
        xyxy = box_convert(t["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
        assert torch.allclose(xyxy, mask_boxes(t["masks"]), atol=1e-4)


def test_missing_png(tiny: Path) -> None:
    (tiny / "annotations/panoptic_train/000001.png").unlink()
    with pytest.raises(ImageLoadError, match=r"^1 panoptic PNGs listed in .*json not found: "
                                             r".*000001\.png\. Fix"):  # fmt: skip
        dataset(tiny)


def test_png_removed_after_the_dataset_was_built(tiny: Path) -> None:
    data = dataset(tiny)
    (tiny / "annotations/panoptic_train/000001.png").unlink()
    with pytest.raises(ImageLoadError, match=r"not found: .*000001\.png \(image_id 1 of .*json"):
        data[0]


def test_png_id_not_in_segments_info(tiny: Path) -> None:
    ids, _ = image_one()
    ids[19, 29] = 77
    Image.fromarray(rgb(ids)).save(tiny / "annotations/panoptic_train/000001.png")
    with pytest.raises(DatasetFormatError, match=r"segment id 77 is in .*000001\.png but not in "
                                                 r"the segments_info"):  # fmt: skip
        dataset(tiny)[0]


def test_json_segment_not_in_png(tiny: Path) -> None:
    edited_json(tiny, lambda d: d["annotations"][0]["segments_info"].append(
        {"id": 88, "category_id": 1}))  # fmt: skip
    with pytest.raises(DatasetFormatError, match=r"000001\.png .*segment id 88 is in .*"
                                                 r"panoptic_train\.json but not in the PNG"):  # fmt: skip
        dataset(tiny).ground_truth(1)


def test_unknown_category(tiny: Path) -> None:
    edited_json(tiny, lambda d: d["annotations"][1]["segments_info"][1].update(category_id=42))
    with pytest.raises(
        DatasetFormatError,
        match=r"panoptic_train\.json: annotations\[1\] \(image_id"
        r" 2, PNG 000002\.png\): segment id 9 has category_id 42, which is not in",
    ):
        dataset(tiny)
    with pytest.raises(DatasetFormatError, match="segment id 700 has category_id 10, which the "
                                                 "label mapping"):  # fmt: skip
        dataset(tiny, label_to_category_id=[1, 3])


def test_png_size_differs_from_image(tiny: Path) -> None:
    ids = np.zeros((20, 31), np.int64)
    ids[:, :30] = image_one()[0]
    Image.fromarray(rgb(ids)).save(tiny / "annotations/panoptic_train/000001.png")
    with pytest.raises(DatasetFormatError, match=r"000001\.png .* is 31x20 \(width x height\) but "
                                                 r"its image 000001\.jpg is 30x20"):  # fmt: skip
        dataset(tiny)[0]


def test_malformed_records_are_named(tiny: Path) -> None:
    Image.fromarray(image_one()[0].astype(np.uint8)).save(
        tiny / "annotations/panoptic_train/000001.png"
    )  # grey-level: no RGB encoding
    with pytest.raises(DatasetFormatError, match=r"000001\.png .*mode L.* Fix: write it as an RGB"):
        dataset(tiny)[0]
    edited_json(tiny, lambda d: d["annotations"][0]["segments_info"][2].update(id=SKY))
    with pytest.raises(DatasetFormatError, match=r"segments_info\[2\] .*id 700 is a duplicate"):
        dataset(tiny)
    edited_json(tiny, lambda d: d["annotations"][0]["segments_info"][2].update(id=DOG))
    edited_json(tiny, lambda d: d["annotations"].pop())
    with pytest.raises(DatasetFormatError, match='image id 3 .* has no record in "annotations"'):
        dataset(tiny)


@pytest.mark.parametrize("area", [360, 0])
def test_a_json_area_other_than_the_pngs_pixel_count_is_refused(tiny: Path, area: int) -> None:
    """PQ's union reads the json's area (as panopticapi's): a wrong one would skew PQ silently
    (0 divided by zero). The cat has 36 pixels in the PNG; the json says otherwise."""
    edited_json(tiny, lambda d: d["annotations"][0]["segments_info"][1].update(area=area))
    expected = (rf"000001\.png \(image_id 1 of .*\): segment id {CAT} has area {area} in the "
                r"segments_info of .*panoptic_train\.json, but the PNG has 36 pixels of it\. "
                r"Fix: set area to the PNG's pixel count")  # fmt: skip
    with pytest.raises(DatasetFormatError, match=expected):
        dataset(tiny)[0]
    with pytest.raises(DatasetFormatError, match=expected):
        dataset(tiny).ground_truth(1)


def test_category_and_folder_errors_give_the_fix(tiny: Path) -> None:
    edited_json(tiny, lambda d: d["categories"][0].update(isthing=2))
    with pytest.raises(
        DatasetFormatError, match=r'"isthing" = 2; expected 0 or 1\. Fix: "isthing": 1 for '
    ):
        dataset(tiny)
    edited_json(tiny, lambda d: d["categories"][0].update(isthing=1))
    with pytest.raises(FileNotFoundError, match=r"Panoptic PNG folder not found: .*elsewhere .*"
                                                r"Fix: give the folder in data\.train_png"):  # fmt: skip
        dataset(tiny, png_folder=tiny / "elsewhere")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("d") / "shapes", train=4, val=2)


def test_shapes_panoptic_split_loads(shapes: Path) -> None:
    tf = make_train_transforms([128, 160], 320, [112, 128], [96, 144])
    ds = CocoPanopticDataset(shapes / "train", shapes / "annotations/panoptic_train.json",
                             transforms=tf)  # fmt: skip
    assert ds.label_to_category_id == list(range(1, 9)) and ds.is_thing == [True] * 5 + [False] * 3
    for i in range(len(ds)):
        _, t = ds[i]
        h, w = t["size"].tolist()
        assert t["masks"].shape == (len(t["labels"]), h, w) and (t["labels"] >= 5).any()  # stuff
        xyxy = box_convert(t["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
        assert torch.allclose(xyxy, mask_boxes(t["masks"]), atol=1e-4)
        gt = ds.ground_truth(int(t["image_id"]))
        assert gt["ids"].shape == tuple(t["orig_size"].tolist())


def test_datamodule_generates_shapes_and_pads_masks(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    tf = make_train_transforms([128, 160], 320, [112, 128], [96, 144])
    dm = PanopticDataModule(root / "train", root / "annotations/panoptic_train.json",
                            root / "val", root / "annotations/panoptic_val.json", batch_size=3,
                            num_workers=0, train_transforms=tf, pad_to_multiple=32,
                            generate_shapes={"root": root, "train": 3, "val": 2})  # fmt: skip
    assert dm.num_classes == 8 and dm.is_thing == [True] * 5 + [False] * 3  # before the files
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    _, _, height, width = batch.pixel_values.shape
    assert height % 32 == 0 and width % 32 == 0
    for i, t in enumerate(batch.targets):
        h, w = t["size"].tolist()
        assert t["masks"].shape == (len(t["labels"]), height, width)
        assert not t["masks"][:, h:].any() and not t["masks"][:, :, w:].any()
        assert batch.pixel_mask[i, :h, :w].all() and t["masks"].flatten(1).any(1).all()
    val = dm.datasets["val"]
    assert isinstance(val, CocoPanopticDataset) and val.png_folder.name == "panoptic_val"


def test_configs_select_panoptic_data(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from detr_lightning.utils import conf_dir

    coco = tmp_path / "coco"
    for split in ("train2017", "val2017"):
        write_split(coco, split, [image_one(), image_two()])
    mine = write_split(tmp_path / "mine", "val", [image_one()])  # a custom json elsewhere
    with initialize_config_dir(str(Path(conf_dir())), version_base="1.3"):
        cfg = compose("train", overrides=["data=coco_panoptic", "data.num_workers=0"])
        shp = compose("train", overrides=["data=shapes_panoptic"])
        own = compose("train", overrides=["data=coco_panoptic", "data.num_workers=0",
                                          f"data.val_ann={mine}", f"data.val_images={mine.parents[1]}/val"])  # fmt: skip
    for c in (cfg, shp, own):
        with open_dict(c):
            c.paths.root_dir = str(tmp_path)  # instead of hydra's run-time cwd
            c.paths.coco_dir = str(coco)
    assert shp.data._target_.endswith("PanopticDataModule")
    assert shp.data.train_ann.endswith("annotations/panoptic_train.json")
    assert shp.data.val_ann.endswith("annotations/panoptic_val.json") and shp.data.generate_shapes
    own_dm = instantiate(own.data)
    own_dm.setup("test")  # its PNGs follow the json given, not the COCO folder
    assert own_dm.datasets["test"].png_folder == tmp_path / "mine/annotations/panoptic_val"
    moved = tmp_path / "pngs"
    (tmp_path / "mine/annotations/panoptic_val").rename(moved)
    with open_dict(own):
        own.data.val_png = str(moved)
    own_dm = instantiate(own.data)
    own_dm.setup("test")  # the test split (the val json by default) follows val_png too
    assert own_dm.datasets["test"].png_folder == moved
    dm = instantiate(cfg.data)
    assert isinstance(dm, PanopticDataModule) and dm.label_to_category_id == [1, 3, 10]
    dm.setup("test")
    image, target = dm.datasets["test"][0]
    assert image.shape[-2:] == (800, 1200) and target["masks"].shape == (3, 800, 1200)
    assert dm.datasets["test"].png_folder == coco / "annotations/panoptic_val2017"


def test_instances_json_where_panoptic_is_expected(tmp_path: Path) -> None:
    from coco_files import write_coco

    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}
    images, ann = write_coco(tmp_path, [(32, 24)], [box])
    with pytest.raises(DatasetFormatError, match=r"is a COCO instances \(detection\) json .*"
                                                 r"head=detection"):  # fmt: skip
        CocoPanopticDataset(images, ann, png_folder=images)


def test_coco_panoptic_categories_keep_their_ids_in_250_slots(tiny: Path) -> None:
    from detr_lightning.data.categories import COCO_CATEGORY_NAMES

    # COCO panoptic 2017's layout: the 80 detection things with their ids and names, stuff
    # with ids 92..200 (here three, one of them the fixture's id 10 moved to 184).
    things = [{"id": i, "name": n, "isthing": 1} for i, n in COCO_CATEGORY_NAMES.items()]
    stuff = [{"id": i, "name": f"stuff{i}", "isthing": 0} for i in (92, 184, 200)]

    def to_coco_ids(data: dict) -> None:
        data["categories"] = things + stuff
        for ann in data["annotations"]:
            for seg in ann["segments_info"]:
                seg["category_id"] = {10: 184}.get(seg["category_id"], seg["category_id"])

    edited_json(tiny, to_coco_ids)
    ds = dataset(tiny)
    assert ds.num_classes == 250 and ds.label_to_category_id == list(range(250))
    assert ds[0][1]["labels"].tolist() == [184, 1, 3]  # sky, cat, dog: label == category id
    assert ds.is_thing[1] and ds.is_thing[90] and not ds.is_thing[184] and not ds.is_thing[0]
    remapped = dataset(tiny, coco_id_space=False)
    assert remapped.num_classes == 83 and remapped[0][1]["labels"].tolist() == [81, 0, 2]
    # stuff without COCO's 80 things is not COCO panoptic: contiguous labels (as the fixture's)
    edited_json(tiny, lambda d: d.update(categories=things[:3] + stuff))
    assert dataset(tiny).num_classes == 6


def test_headers_cover_the_segment_pngs(tiny: Path) -> None:
    dataset(tiny).check_headers()
    Image.fromarray(np.zeros((20, 31, 3), np.uint8)).save(
        tiny / "annotations/panoptic_train/000001.png"
    )
    with pytest.raises(ImageLoadError, match=r"1 panoptic PNGs listed in .* cannot be used: "
                                             r".*000001\.png is 31x20, the json says 30x20"):  # fmt: skip
        dataset(tiny).check_headers()


def test_panoptic_png_with_an_alpha_channel_is_read_like_rgb(tmp_path):
    """Docstring of rgb_to_ids: 'an alpha channel is ignored, as panopticapi does'. An RGBA
    PNG decodes to the same ids id = R + 256 G + 256^2 B (hand-built map)."""
    import json

    import numpy as np
    from PIL import Image

    from detr_lightning.data.coco_panoptic import CocoPanopticDataset

    ids = np.zeros((6, 8), np.int64)
    ids[1:4, 2:6] = 700  # 188 + 256 * 2
    (tmp_path / "train").mkdir()
    pngs = tmp_path / "annotations" / "panoptic_train"
    pngs.mkdir(parents=True)
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(tmp_path / "train" / "1.jpg")
    colours = np.stack([ids % 256, ids // 256 % 256, ids // 256**2, np.full_like(ids, 255)], -1)
    Image.fromarray(colours.astype(np.uint8), mode="RGBA").save(pngs / "1.png")
    ann = tmp_path / "annotations" / "panoptic_train.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 6}],
                "annotations": [
                    {
                        "image_id": 1,
                        "file_name": "1.png",
                        "segments_info": [{"id": 700, "category_id": 1, "iscrowd": 0}],
                    }
                ],
                "categories": [{"id": 1, "name": "cat", "isthing": 1}],
            }
        )
    )
    ds = CocoPanopticDataset(tmp_path / "train", ann)
    assert torch.equal(ds.read_id_map(0), torch.from_numpy(ids))
    _, target = ds[0]
    assert target["masks"].sum().item() == 12 and target["labels"].tolist() == [0]


def test_two_image_records_on_one_file_are_refused(tiny: Path) -> None:
    """Images 1 and 2 of the panoptic json both named 000001.jpg: refused like the instances
    json (one shared check), naming both ids, the file name and the merge fix."""
    edited_json(tiny, lambda d: d["images"][1].update(file_name="000001.jpg"))
    with pytest.raises(DatasetFormatError, match=r'panoptic_train\.json: image ids 1 and 2 both '
                                                 r'have "file_name" "000001\.jpg".* Fix: merge'):  # fmt: skip
        dataset(tiny)


def test_two_categories_with_one_name_are_refused(tiny: Path) -> None:
    """The panoptic json's categories go through the same check as the instances json's."""

    def rename(d: dict) -> None:
        d["categories"][1]["name"] = d["categories"][0]["name"]

    edited_json(tiny, rename)
    with pytest.raises(DatasetFormatError, match=r"panoptic_train\.json: category ids \d+ and \d+ "
                                                 r'are both named ".+"'):  # fmt: skip
        dataset(tiny)


def test_a_missing_isthing_is_named_with_its_meaning(tiny: Path) -> None:
    """A category without "isthing" reads as missing, with the 1 = thing, 0 = stuff hint."""
    edited_json(tiny, lambda d: d["categories"][0].pop("isthing"))
    with pytest.raises(DatasetFormatError, match=r'categories\[0\] \(id=\d+\) has no "isthing" '
                                                 r'field \(missing\); expected int\. Fix: '
                                                 r'"isthing": 1 for a class of countable '
                                                 r"objects \(thing\), 0 for"):  # fmt: skip
        dataset(tiny)
