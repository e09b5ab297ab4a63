"""DetrDataModule: loaders yield Batches; label mapping is eager and round-trips checkpoints."""

import logging

import lightning as L
import pytest
import torch
from coco_files import write_coco
from hydra.utils import instantiate
from omegaconf import OmegaConf

from detr_lightning.data.collate import Batch
from detr_lightning.data.datamodule import DetrDataModule
from detr_lightning.data.epoch_sampler import EpochRandomSampler
from detr_lightning.data.errors import DatasetFormatError, ImageLoadError
from detr_lightning.data.transforms import make_eval_transforms, make_train_transforms

TINY = dict(
    train_transforms=make_train_transforms(
        scales=(64, 80), max_size=120, crop_resize_scales=(70,), crop_size=(40, 60)
    ),
    val_transforms=make_eval_transforms(size=64, max_size=120),
)


def shapes_dm(root, **kw):
    return DetrDataModule(
        train_images=root / "train",
        train_ann=root / "annotations" / "instances_train.json",
        val_images=root / "val",
        val_ann=root / "annotations" / "instances_val.json",
        generate_shapes={"root": str(root), "train": 10, "val": 4, "seed": 1},
        **{**TINY, **kw},
    )


def test_shapes_generated_on_prepare_and_loaders_yield_batches(tmp_path):
    root = tmp_path / "shapes"
    dm = shapes_dm(root, batch_size=3, num_workers=2, pad_to_multiple=32, pin_memory=False)
    assert not root.exists() and dm.num_classes == 5  # known before any file is written
    assert dm.category_names == ["ellipse", "rectangle", "triangle", "cross", "star"]
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 10 and len(dm.datasets["val"]) == 4
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(isinstance(b, Batch) for b in batches)
    b = batches[0]
    assert b.pixel_values.shape[0] == 3 and b.pixel_values.shape[-1] % 32 == 0
    assert b.pixel_mask.shape == (3, *b.pixel_values.shape[-2:])
    for i, t in enumerate(b.targets):
        h, w = t["size"].tolist()
        assert b.pixel_mask[i].sum() == h * w
        assert min(h, w) in (64, 80) or max(h, w) == 120
        assert set(t) == {"labels", "boxes", "image_id", "orig_size", "size", "iscrowd", "area"}
        assert (t["labels"] < dm.num_classes).all()
    val = next(iter(dm.val_dataloader()))
    assert min(val.targets[0]["size"].tolist()) == 64 or max(val.targets[0]["size"].tolist()) == 120


def test_mapping_from_the_training_json_is_used_for_every_split(tmp_path):
    cats = [{"id": 9, "name": "b"}, {"id": 4, "name": "a"}]
    tr = write_coco(
        tmp_path / "tr",
        [(40, 30)],
        [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 9, 9]}],
        cats,
    )
    va = write_coco(
        tmp_path / "va",
        [(40, 30)],
        [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 9, 9]}],
        cats[:1],
    )
    dm = DetrDataModule(*tr, *va, num_workers=0, **TINY)
    assert dm.label_to_category_id == [4, 9] and dm.num_classes == 2
    dm.setup("validate")
    assert dm.datasets["val"].label_to_category_id == [4, 9]  # not [9] from the val json
    assert next(iter(dm.val_dataloader())).targets[0]["labels"].tolist() == [1]
    with pytest.raises(ValueError, match="No test dataset"):
        dm.test_dataloader()

    restored = DetrDataModule(*tr, *va, num_workers=0, **TINY)
    restored.load_state_dict({"label_to_category_id": [4, 9, 11], "categories": cats})
    assert restored.num_classes == 3
    restored.setup("validate")
    assert restored.datasets["val"].num_classes == 3
    wrong = DetrDataModule(*tr, *va, num_workers=0, **TINY)
    wrong.load_state_dict({"label_to_category_id": [4]})
    with pytest.raises(DatasetFormatError, match=r"annotation id 1 .*label mapping \[4\]"):
        wrong.setup("validate")


def test_the_evaluation_transform_is_recorded_and_another_one_is_named(tmp_path, caplog):
    cats = [{"id": 4, "name": "a"}]
    tr = write_coco(tmp_path / "tr", [(40, 30)],
                    [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 9, 9]}], cats)  # fmt: skip
    trained = DetrDataModule(*tr, *tr, num_workers=0, **TINY)
    assert "val_transforms" not in trained.state_dict()  # nothing recorded, nothing claimed
    trained.val_transforms_record = {"_target_": "x", "size": 800, "max_size": 1333}
    state = trained.state_dict()
    assert state["val_transforms"] == {"_target_": "x", "size": 800, "max_size": 1333}
    same = DetrDataModule(*tr, *tr, num_workers=0, **TINY)
    same.val_transforms_record = dict(state["val_transforms"])
    other = DetrDataModule(*tr, *tr, num_workers=0, **TINY)
    other.val_transforms_record = {"_target_": "x", "size": 160, "max_size": 1333}
    with caplog.at_level(logging.WARNING):
        same.load_state_dict(state)
        assert "val_transforms" not in caplog.text
        other.load_state_dict(state)
    assert "{size: 800} (its evaluation's); this run uses {size: 160} (size differ)" in caplog.text


def test_instantiated_by_hydra_from_yaml_values(tmp_path):
    root = tmp_path / "shapes"
    cfg = OmegaConf.create({
        "_target_": "detr_lightning.data.datamodule.DetrDataModule",
        "train_images": f"{root}/train", "train_ann": f"{root}/annotations/instances_train.json",
        "val_images": f"{root}/val", "val_ann": f"{root}/annotations/instances_val.json",
        "num_workers": 0, "batch_size": 2, "coco_id_space": False,
        "generate_shapes": {"root": str(root), "train": 4, "val": 2, "seed": 0},
        "train_transforms": {"_target_": "detr_lightning.data.transforms.make_train_transforms",
                             "scales": [64, 80], "max_size": 120, "crop_resize_scales": [70],
                             "crop_size": [40, 60]},
        "val_transforms": {"_target_": "detr_lightning.data.transforms.make_eval_transforms",
                           "size": 64, "max_size": 120},
    })  # fmt: skip
    dm = instantiate(cfg)
    dm.prepare_data()
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and min(batch.pixel_values.shape[-2:]) >= 64
    assert dm.num_classes == 5


def test_missing_training_json_without_generation(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"instances_train\.json.*make data"):
        DetrDataModule(tmp_path, tmp_path / "instances_train.json")


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, Batch)
        assert batch.pixel_mask.dtype == torch.bool
        return (self.w * batch.pixel_values.mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_mapping_travels_in_lightning_checkpoints(tmp_path):
    dm = shapes_dm(tmp_path / "shapes", batch_size=2, num_workers=0)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(_Tiny(), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    ckpt = torch.load(tmp_path / "c.ckpt", weights_only=False)
    assert ckpt["DetrDataModule"]["label_to_category_id"] == [1, 2, 3, 4, 5]


def test_setup_refuses_a_split_without_objects(tmp_path):
    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}
    tr = write_coco(tmp_path / "tr", [(64, 48)], [box])
    va = write_coco(tmp_path / "va", [(64, 48)], [])  # labelled images, no annotation
    dm = DetrDataModule(*tr, *va, num_workers=0, **TINY)
    with pytest.raises(DatasetFormatError, match=r"the val split has no object to score against"):
        dm.setup("fit")
    assert "val" not in dm.datasets
    with pytest.raises(DatasetFormatError, match=r"the train split has no object to train on"):
        DetrDataModule(*va, num_workers=0, **TINY).setup("fit")


def test_keep_empty_false_drops_training_images_only(tmp_path):
    # COCO's AP counts the false positives on an evaluation image without objects
    box = {"id": 1, "image_id": 2, "category_id": 1, "bbox": [2, 2, 10, 10]}
    split = write_coco(tmp_path / "d", [(64, 48)] * 2, [box])  # image 1 has no object
    dm = DetrDataModule(*split, *split, *split, num_workers=0, keep_empty=False, **TINY)
    dm.setup()
    assert [dm.datasets[s].image_ids for s in ("train", "val", "test")] == [[2], [1, 2], [1, 2]]


def test_evaluation_images_are_checked_before_training(tmp_path):
    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}
    tr = write_coco(tmp_path / "tr", [(64, 48)], [box])
    va = write_coco(tmp_path / "va", [(64, 48)], [box])
    (va[0] / "0001.jpg").write_bytes(b"\xff\xd8 truncated to nothing")
    with pytest.raises(ImageLoadError, match=r"1 images listed in .*va.*ann\.json cannot be used"):
        DetrDataModule(*tr, *va, num_workers=0, **TINY).setup("fit")
    # a training image is read within the first epoch: not checked up front
    dm = DetrDataModule(*va, *tr, num_workers=0, **TINY)
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val"}


def test_the_training_order_follows_the_run_seed(tmp_path):
    cats = [{"id": 4, "name": "a"}]
    tr = write_coco(tmp_path / "tr", [(40, 30), (30, 40)],
                    [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 9, 9]}], cats)  # fmt: skip
    for grouped in (False, True):
        torch.manual_seed(5)  # what seed_everything(seed) leaves
        dm = DetrDataModule(*tr, *tr, num_workers=0, group_by_aspect_ratio=grouped, **TINY)
        loader = dm.train_dataloader()
        sampler = loader.batch_sampler.sampler
        assert isinstance(sampler, EpochRandomSampler) and sampler.seed == 5
        assert not isinstance(dm.val_dataloader().sampler, EpochRandomSampler)


def test_making_a_training_iterator_draws_nothing_from_the_global_random_state(tmp_path):
    """Its workers' seed comes from the loader's own generator, so the model's random numbers
    do not depend on when Lightning makes the iterator (earlier in a resumed run)."""
    cats = [{"id": 4, "name": "a"}]
    tr = write_coco(tmp_path / "tr", [(40, 30), (30, 40)],
                    [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 9, 9]}], cats)  # fmt: skip
    for grouped in (False, True):
        torch.manual_seed(5)
        dm = DetrDataModule(*tr, *tr, num_workers=0, group_by_aspect_ratio=grouped, **TINY)
        loader = dm.train_dataloader()
        before = torch.get_rng_state()
        iter(loader)
        iter(loader)
        assert torch.equal(torch.get_rng_state(), before)
        seeds = [iter(dm.train_dataloader())._base_seed for _ in range(2)]
        assert seeds[0] == seeds[1]  # a function of the run's seed


def test_a_split_naming_category_ids_otherwise_than_training_is_refused(tmp_path, caplog):
    """train.json 1=square, 2=disc; val.json 1=disc, 2=square (ids swapped names): labels follow
    ids, so val would be scored against the wrong classes. Refused, naming each id with both
    names and both files. A checkpoint whose names differ from the data's is only warned about
    (its names are used)."""
    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}
    train_cats = [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}]
    tr = write_coco(tmp_path / "tr", [(64, 48)], [box], train_cats, name="train.json")
    va = write_coco(tmp_path / "va", [(64, 48)], [box], train_cats[::-1], name="val.json")
    va[1].write_text(va[1].read_text().replace('"square"', '"tmp"').replace('"disc"', '"square"')
                     .replace('"tmp"', '"disc"'))  # fmt: skip
    with pytest.raises(DatasetFormatError) as err:
        DetrDataModule(*tr, *va, num_workers=0, **TINY).setup("fit")
    msg = str(err.value)
    assert f"id 1: 'disc' in {va[1]}, 'square' in {tr[1]}" in msg
    assert f"id 2: 'square' in {va[1]}, 'disc' in {tr[1]}" in msg
    assert "Fix: use one categories list" in msg

    dm = DetrDataModule(*tr, *tr, num_workers=0, **TINY)
    with caplog.at_level(logging.WARNING):
        dm.load_state_dict({"label_to_category_id": [1, 2], "categories": [
            {"id": 1, "name": "square"}, {"id": 2, "name": "circle"}]})  # fmt: skip
    assert f"id 2: 'disc' in {tr[1]}, 'circle' in the checkpoint" in caplog.text
    assert "id 1:" not in caplog.text and dm.category_names == ["square", "circle"]
    dm.setup("fit")  # the data's own splits still agree with each other


def test_a_test_split_on_the_val_files_is_read_and_warned_about_once(tmp_path, caplog):
    """val and test name the same json and folder (a box reaching outside its image): one
    dataset serves both, so the json's warning is printed once, not twice."""
    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}
    tr = write_coco(tmp_path / "tr", [(64, 48)], [box])
    va = write_coco(tmp_path / "va", [(64, 48)], [{**box, "bbox": [60, 2, 10, 10]}])
    dm = DetrDataModule(*tr, *va, *va, num_workers=0, **TINY)
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.coco"):
        dm.setup("fit")
        dm.setup("test")
    assert dm.datasets["test"] is dm.datasets["val"]
    assert [r.getMessage().count(str(va[1])) for r in caplog.records] == [1]


def _square_turned(path, orientation: int = 6):
    """A 32x32 JPEG, left half red, right half blue, with an EXIF orientation tag (6: viewers
    turn it 90 degrees clockwise, so the red half ends up on top)."""
    import numpy as np
    from PIL import Image

    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)
    arr[:, 16:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif, quality=98)


@pytest.mark.parametrize("exif_transpose", [True, False])
def test_exif_transpose_reaches_the_datasets_and_square_turns_are_counted(
    tmp_path, caplog, exif_transpose
):
    """data.exif_transpose picks the pixels of a square EXIF-turned image (width == height
    cannot tell which the labels were made on): true, upright (red on top); false, as stored
    (red on the left). The val split's header check counts such images and names the key."""
    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}
    tr = write_coco(tmp_path / "tr", [(32, 32)], [box])
    va = write_coco(tmp_path / "va", [(32, 32)] * 3, [box])
    _square_turned(va[0] / "0001.jpg", 6)
    _square_turned(va[0] / "0002.jpg", 3)  # 180 degrees: the size never tells either
    dm = DetrDataModule(*tr, *va, num_workers=0, exif_transpose=exif_transpose, **TINY)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    ds = dm.datasets["val"]
    assert ds.exif_transpose is exif_transpose and dm.datasets["train"].exif_transpose is (
        exif_transpose
    )
    red = ds[0][0][0]  # normalised red channel, 64x64 after the eval resize
    top, left = red[:32].mean() - red[32:].mean(), red[:, :32].mean() - red[:, 32:].mean()
    assert (top > 1.0 and abs(left) < 0.3) if exif_transpose else (left > 1.0 and abs(top) < 0.3)
    counted = f"{va[1]}: 2 images have an EXIF orientation that keeps their size"
    assert (counted in caplog.text) is exif_transpose
    if exif_transpose:
        assert "set data.exif_transpose=false" in caplog.text


def test_exif_transpose_is_a_data_config_key():
    """Every data config composes data.exif_transpose (true by default: images read upright)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf" / "data"
    for name in ("coco", "custom"):  # the others inherit one of these through defaults
        assert OmegaConf.load(conf / f"{name}.yaml").exif_transpose is True
