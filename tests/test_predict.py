"""``detr_lightning.predict`` on folders: COCO results with the original ids, drawings, skipped
unreadable files, and official DETR releases without ImageNet weights or COCO files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import INFER_TINY, TINY, run_cli, run_dirs
from PIL import Image
from pycocotools.coco import COCO
from release_files import TINY_DETR
from torchvision.io import decode_image

from detr_lightning.data.categories import COCO_CATEGORY_NAMES
from detr_lightning.data.panoptic_png import rgb_to_ids
from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.detr import DETR, Backbone, Transformer, build_position_encoding

# The paper's DETR at test size, as the r50 preset with overrides (official-file tests).
DOG = 18  # a COCO id: an official COCO model's label is the id itself


def official_release(path: Path) -> Path:
    """A tiny random DETR saved as an official release (``{"model": ...}``, official key
    names), 91 COCO classes, biased so that every query says "dog"."""
    torch.manual_seed(0)
    net = DETR(Backbone("resnet18"), build_position_encoding("sine", 32),
               Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                           dim_feedforward=64), num_classes=91, num_queries=5)  # fmt: skip
    with torch.no_grad():
        net.class_embed.bias[DOG] = 20.0
    renamed = {
        k.replace("backbone.", "backbone.0.", 1).replace("position_encoding.", "backbone.1.", 1): v
        for k, v in net.state_dict().items()
    }
    torch.save({"model": renamed}, path)
    return path


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", train=8, val=4)


@pytest.fixture(scope="module")
def checkpoint(shapes_root, tmp_path_factory) -> Path:
    """A 3-step tiny shapes training run's last.ckpt (ConvergenceDETR with one encoder layer)."""
    cwd = tmp_path_factory.mktemp("train")
    out = run_cli("train", ["schedule=smoke", "test=false", f"paths.shapes_dir={shapes_root}",
                            *TINY], cwd)  # fmt: skip
    return run_dirs(out)[0] / "checkpoints" / "last.ckpt"


@pytest.fixture()
def image_folder(shapes_root, tmp_path) -> Path:
    """The val images in nested folders, plus one unreadable .jpg and a non-image file."""
    folder = tmp_path / "images"
    for i, src in enumerate(sorted((shapes_root / "val").iterdir())):
        dst = folder / ("nested/deeper" if i % 2 else "top") / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    (folder / "top" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "readme.txt").write_text("ignored")
    return folder


def test_folder_predictions_load_with_loadres_and_skip_the_unreadable_file(
    checkpoint, shapes_root, image_folder, tmp_path
) -> None:
    out_dir = tmp_path / "pred"
    out = run_cli("predict", ["experiment=shapes", f"ckpt_path={checkpoint}",
                              f"input={image_folder}", f"output_dir={out_dir}", "num_workers=0",
                              "batch_size=3", "draw.score_threshold=0", "draw.top_k=3",
                              f"paths.shapes_dir={shapes_root}", *INFER_TINY], tmp_path)  # fmt: skip
    assert "cannot read image" in out and str(image_folder / "top" / "broken.jpg") in out
    assert "skipped 1 unreadable image(s)" in out
    # output_dir is the run directory: the log and the composed config are there, nowhere else
    assert f"run directory: {out_dir}" in out and not (tmp_path / "outputs").exists()
    assert "cannot read image" in (out_dir / "predict.log").read_text()
    assert (
        "draw:\n  enabled: true\n  score_threshold: 0"
        in (out_dir / ".hydra" / "config.yaml").read_text()
    )
    gt = json.loads((out_dir / "images.json").read_text())
    readable = sorted(p.relative_to(image_folder).as_posix()
                      for p in image_folder.rglob("*.jpg") if p.name != "broken.jpg")  # fmt: skip
    assert sorted(im["file_name"] for im in gt["images"]) == readable
    res = COCO(str(out_dir / "images.json")).loadRes(str(out_dir / "predictions.json"))
    records = json.loads((out_dir / "predictions.json").read_text())
    assert len(res.anns) == len(records) == 8 * len(readable)  # every query of every image
    val = json.loads((shapes_root / "annotations" / "instances_val.json").read_text())
    names = {c["id"]: c["name"] for c in val["categories"]}
    assert {r["category_id"] for r in records} <= set(names)
    assert all(r["category_name"] == names[r["category_id"]] for r in records)
    for im in gt["images"]:  # one drawing per image, same size, with boxes on it
        drawn = decode_image(str(out_dir / "drawn" / Path(im["file_name"]).with_suffix(".png")))
        original = decode_image(str(image_folder / im["file_name"]))
        assert drawn.shape == original.shape == (3, im["height"], im["width"])
        assert (drawn.int() - original.int()).abs().amax(0).gt(60).sum() > 50


def test_predict_into_its_input_folder_leaves_out_earlier_runs_and_hidden_files(tmp_path) -> None:
    """input=DIR output_dir=DIR/out2 after a run into DIR/out1 predicted out1's drawings too
    (and .hidden.png): now only the photo, and the log says what was left out."""
    folder = tmp_path / "photos"
    for name in ["x.png", ".hidden.png", "out1/drawn/x.png"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(folder / name)
    (folder / "out1" / ".hydra").mkdir()  # as an earlier predict run leaves it
    release = official_release(tmp_path / "detr-tiny.pth")
    shell = tmp_path / "shell"  # weights and input typed relative to it, with ".."
    shell.mkdir()
    out = run_cli("predict", ["experiment=r50", "model.pretrained=../detr-tiny.pth",
                              "input=../photos", f"output_dir={folder / 'out2'}", "num_workers=0",
                              "device=cpu", "draw.enabled=false", "paths.coco_dir=/nonexistent",
                              *TINY_DETR], shell)  # fmt: skip
    assert "predicted 1 images" in out
    written = json.loads((folder / "out2" / "images.json").read_text())
    assert [im["file_name"] for im in written["images"]] == ["x.png"]
    # what the file names are relative to, and the weights, as paths that mean something later
    assert written["info"]["weights"] == str(release.resolve())
    assert written["info"]["input"] == str(folder.resolve())
    assert "1 earlier run folder(s)" in out and "1 folder(s) that are this run's output_dir" in out
    assert "1 hidden image file(s)" in (folder / "out2" / "predict.log").read_text()


@pytest.mark.parametrize("case", ["folder", "image", "text"])
def test_predict_fails_naming_the_files_when_none_can_be_read(tmp_path, case: str) -> None:
    """It used to print "predicted 0 images", write an empty predictions.json and exit 0."""
    folder = tmp_path / "images"
    folder.mkdir()
    bad = folder / ("notes.txt" if case == "text" else "garbage.png")
    bad.write_bytes(b"epoch 3: AP 0.41\n" if case == "text" else b"\x89PNG\r\n\x1a\n garbage")
    source = folder if case == "folder" else bad
    release = official_release(tmp_path / "detr-tiny.pth")
    out_dir = tmp_path / "pred"
    out = run_cli("predict", ["experiment=r50", f"model.pretrained={release}", f"input={source}",
                              f"output_dir={out_dir}", "num_workers=0", "device=cpu",
                              "paths.coco_dir=/nonexistent", *TINY_DETR], tmp_path,
                  fails=True)  # fmt: skip
    assert f"input={source}: none of the 1 image file(s) could be read" in out
    reason = "UnidentifiedImageError" if case == "text" else "OSError: Truncated File Read"
    assert f"cannot read image {bad} ({reason}" in out and "Fix: give input=" in out
    assert "predicted 0 images" not in out and not (out_dir / "predictions.json").exists()
    assert "Traceback" not in out  # the message alone (an ExplainedError)


def test_official_release_reports_coco_ids_without_imagenet_weights_or_coco_files(
    tmp_path, image_folder, monkeypatch
) -> None:
    release = official_release(tmp_path / "detr-tiny.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))  # no ImageNet weights there
    out_dir = tmp_path / "pred"
    out = run_cli("predict", ["experiment=r50", f"model.pretrained={release}",
                              f"input={image_folder}", f"output_dir={out_dir}", "num_workers=0",
                              "device=cpu", "paths.coco_dir=/nonexistent", *TINY_DETR],
                  tmp_path)  # fmt: skip
    assert "predicted 4 images" in out
    records = json.loads((out_dir / "predictions.json").read_text())
    assert {r["category_id"] for r in records} == {DOG}
    assert {r["category_name"] for r in records} == {"dog"}
    categories = json.loads((out_dir / "images.json").read_text())["categories"]
    assert {c["id"]: c["name"] for c in categories} == COCO_CATEGORY_NAMES
    assert not (tmp_path / "empty_hub").exists()

    # The same output_dir again: refused before loading anything, nothing there touched: not
    # the earlier run's .hydra/ (its overrides) and predict.log either, and no failed.json.
    def listing() -> dict[str, bytes]:
        return {str(p.relative_to(out_dir)): p.read_bytes() for p in out_dir.rglob("*")
                if p.is_file()}  # fmt: skip

    before = listing()
    assert ".hydra/overrides.yaml" in before and "predict.log" in before
    out = run_cli("predict", ["experiment=r50", f"model.pretrained={release}",
                              f"input={image_folder / 'top'}", f"output_dir={out_dir}",
                              "num_workers=0",
                              "device=cpu", "paths.coco_dir=/nonexistent", *TINY_DETR],
                  tmp_path, fails=True)  # fmt: skip
    assert "already holds predictions.json, images.json, drawn" in out
    assert "Fix: give a new output_dir" in out and "detector from" not in out
    assert listing() == before


def test_official_panoptic_release_predicts_coco_ids_without_data(tmp_path, image_folder) -> None:
    from official_segmentation import official_panoptic_sd

    torch.manual_seed(0)
    # d 128 and 8 heads, as official: its mask head's GroupNorm(8) needs every width (d + heads,
    # d / 2 ... d / 16) divisible by 8
    sd = official_panoptic_sd("resnet18", d=128, heads=8, ff=64, q=5, classes=250, enc=1, dec=2)
    sd["detr.class_embed.bias"][DOG] = 20.0  # every query says "dog"
    release = tmp_path / "detr-tiny-panoptic.pth"
    torch.save({"model": sd}, release)
    out_dir = tmp_path / "pred"
    out = run_cli("predict", ["experiment=r50_panoptic", f"model.pretrained={release}",
                              f"input={image_folder}", f"output_dir={out_dir}", "num_workers=0",
                              "device=cpu", "paths.coco_dir=/nonexistent",
                              *[o.replace("nhead=4", "nhead=8").replace("d_model=32", "d_model=128")
                                for o in TINY_DETR]],
                  tmp_path)  # fmt: skip
    assert "predicted 4 images" in out and "re-initialised: none" in out and "250 classes" in out
    records = json.loads((out_dir / "predictions.json").read_text())
    assert {(r["category_id"], r["category_name"]) for r in records} == {(DOG, "dog")}
    # The panoptic segmentation, in COCO's format: one PNG per image at its original size,
    # named as its drawing, holding exactly the listed segments (all dogs: a thing, id <= 90).
    panoptic = json.loads((out_dir / "panoptic.json").read_text())
    drawn = sorted(
        str(p.relative_to(out_dir / "drawn")) for p in (out_dir / "drawn").rglob("*.png")
    )
    assert sorted(a["file_name"] for a in panoptic["annotations"]) == drawn
    sizes = {i["id"]: (i["height"], i["width"]) for i in
             json.loads((out_dir / "images.json").read_text())["images"]}  # fmt: skip
    segments = 0
    for ann in panoptic["annotations"]:
        png = np.asarray(Image.open(out_dir / "panoptic" / ann["file_name"]).convert("RGB"))
        ids = rgb_to_ids(png)
        assert ids.shape == sizes[ann["image_id"]]
        values, counts = np.unique(ids[ids > 0], return_counts=True)
        listed = {s["id"]: s["area"] for s in ann["segments_info"]}
        assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == listed
        assert all(s["category_id"] == DOG and s["isthing"] for s in ann["segments_info"])
        segments += len(listed)
    assert segments > 0
    # COCO panoptic's 133 categories: a segment can never get an unused slot's id
    listed = {c["id"]: (c["name"], c["isthing"]) for c in panoptic["categories"]}
    assert len(listed) == 133 and listed[DOG] == ("dog", 1)
    assert listed[187] == ("sky-other-merged", 0) and 12 not in listed and 0 not in listed


def test_bf16_on_a_cpu_without_native_bf16_warns_before_predicting(
    tmp_path, image_folder, monkeypatch
) -> None:
    """``speed.dtype=bfloat16`` where the CPU only emulates bf16: the warning names the key and
    comes before any image is predicted (as an error here, so nothing runs after it)."""
    import warnings

    from hydra import compose, initialize_config_dir

    from detr_lightning.predict import predict
    from detr_lightning.utils import conf_dir, cpu_precision

    monkeypatch.setattr(cpu_precision, "cpu_computes_natively", lambda dtype: False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    release = official_release(tmp_path / "detr-tiny.pth")
    out_dir = tmp_path / "pred"
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("predict", overrides=[
            "experiment=r50", f"model.pretrained={release}", f"input={image_folder}",
            f"output_dir={out_dir}", "num_workers=0", "device=cpu", "speed.dtype=bfloat16",
            "paths.coco_dir=/nonexistent", *TINY_DETR])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", cpu_precision.SlowPrecisionWarning)
        with pytest.raises(cpu_precision.SlowPrecisionWarning, match="speed.dtype=bfloat16"):
            predict(cfg)
    assert not (out_dir / "predictions.json").exists()


def test_the_checkpoint_names_its_evaluation_size_when_predict_uses_another(
    checkpoint, shapes_root, caplog
) -> None:
    from hydra import compose, initialize_config_dir

    from detr_lightning.inference.loading import load_detector
    from detr_lightning.utils import conf_dir

    state = torch.load(checkpoint, weights_only=True)
    record = next(v for v in state.values() if isinstance(v, dict) and "categories" in v)
    assert record["val_transforms"]["size"] == 96  # TINY's data.val_transforms.size
    overrides = ["experiment=shapes", f"ckpt_path={checkpoint}", f"paths.shapes_dir={shapes_root}",
                 *INFER_TINY]  # fmt: skip
    for size, warned in ((96, False), (160, True)):
        with initialize_config_dir(conf_dir(), version_base="1.3"):
            cfg = compose("predict", overrides=[*overrides, f"data.val_transforms.size={size}"])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            load_detector(cfg)
        assert ("{size: 96} (its evaluation's); this run uses {size: 160}" in caplog.text) == warned


def test_a_predict_sweep_writes_each_job_into_its_own_folder(checkpoint, shapes_root, tmp_path):
    """Without output_dir each job writes into its own run directory (Hydra's sweep folders)."""
    out = run_cli("predict", ["-m", "experiment=shapes", f"ckpt_path={checkpoint}",
                              f"input={shapes_root / 'val'}", "draw.enabled=false",
                              "draw.top_k=1,2", "num_workers=0",
                              f"paths.shapes_dir={shapes_root}", *INFER_TINY], tmp_path)  # fmt: skip
    dirs = run_dirs(out)
    assert len(dirs) == len(set(dirs)) == 2
    for job, top_k in zip(dirs, (1, 2), strict=True):
        assert job.parent.parent == tmp_path / "multirun" / "shapes"
        assert len(json.loads((job / "predictions.json").read_text())) == 8 * 4
        assert f"top_k: {top_k}" in (job / ".hydra" / "config.yaml").read_text()


def test_an_official_release_is_read_once_for_its_classes_and_weights(
    tmp_path, monkeypatch
) -> None:
    from hydra import compose, initialize_config_dir

    from detr_lightning.inference.loading import load_detector
    from detr_lightning.utils import conf_dir

    release = official_release(tmp_path / "detr-tiny.pth")
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("predict", overrides=["experiment=r50", f"model.pretrained={release}",
                                            "paths.coco_dir=/nonexistent", *TINY_DETR])  # fmt: skip
    reads = []
    load = torch.load
    monkeypatch.setattr(
        torch, "load", lambda f, *a, **kw: reads.append(str(f)) or load(f, *a, **kw)
    )
    detector = load_detector(cfg)
    assert reads == [str(release)]
    assert len(detector.category_ids) == 91 and detector.names[DOG] == "dog"


def test_a_checkpoint_loaded_with_another_net_config_is_named(checkpoint, shapes_root, tmp_path,
                                                               caplog) -> None:  # fmt: skip
    """The training run's composition loads silently; one that changes no tensor shape
    (the proposal queries kept, 8 -> 6) is named, key by key."""
    from hydra_jobs import compose_job

    from detr_lightning.inference.loading import load_detector

    base = ["experiment=shapes", f"ckpt_path={checkpoint}", f"paths.shapes_dir={shapes_root}",
            *INFER_TINY]  # fmt: skip
    caplog.set_level(logging.WARNING)
    load_detector(compose_job(base, tmp_path, name="predict"), None, torch.device("cpu"))
    assert "another model.net" not in caplog.text
    load_detector(compose_job([*base, "model.net.num_queries=6"], tmp_path, name="predict"), None,
                  torch.device("cpu"))  # fmt: skip
    assert f"ckpt_path={checkpoint} was trained with another model.net than this run composes " \
           "(model.net.num_queries: 8 -> 6)" in caplog.text  # fmt: skip


@pytest.mark.parametrize("upright", [True, False])
def test_predict_reads_exif_rotated_images_as_data_exif_transpose_says(
    tmp_path, upright: bool
) -> None:
    """data.exif_transpose=false (labels made on the stored pixels) was accepted and ignored:
    predict read every image upright, eval (the data module) as stored."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 wide x 40 high, shown turned by 90 degrees
    image = tmp_path / "turned.jpg"
    Image.fromarray(np.full((40, 64, 3), 128, np.uint8)).save(image, exif=exif)
    release = official_release(tmp_path / "detr-tiny.pth")
    out_dir = tmp_path / "pred"
    run_cli("predict", ["experiment=r50", f"model.pretrained={release}", f"input={image}",
                        f"output_dir={out_dir}", "num_workers=0", "device=cpu",
                        f"data.exif_transpose={str(upright).lower()}",
                        "paths.coco_dir=/nonexistent", *TINY_DETR], tmp_path)  # fmt: skip
    (record,) = json.loads((out_dir / "images.json").read_text())["images"]
    assert (record["width"], record["height"]) == ((40, 64) if upright else (64, 40))
    boxes = [r["bbox"] for r in json.loads((out_dir / "predictions.json").read_text())]
    assert max(x + w for x, _, w, _ in boxes) <= record["width"] + 1e-3


@pytest.mark.parametrize(
    "weights",
    [["onnx=model.onnx", "ckpt_path=run.ckpt"],  # backend=torch: the .onnx was ignored
     ["backend=onnxruntime", "onnx=model.onnx", "ckpt_path=run.ckpt"],
     ["backend=onnxruntime", "onnx=model.onnx", "model.pretrained=detr.pth"]],
)  # fmt: skip
def test_weights_the_backend_does_not_read_are_refused(
    weights: list[str], tmp_path, monkeypatch
) -> None:
    """They were accepted and ignored: ``onnx=`` without ``backend=onnxruntime`` predicted with
    the checkpoint (the .onnx meant to be checked was never run), and a checkpoint given to
    ``backend=onnxruntime`` was not the one predicting."""
    onnx = "backend=onnxruntime" in weights
    message = _refused_weights(weights, tmp_path, monkeypatch)
    assert "Fix:" in message
    assert (f"does not read {weights[-1]}" if onnx else "onnx=model.onnx is read by") in message


@pytest.mark.parametrize(
    ("weights", "expected"),
    [([], "give ckpt_path=<Lightning .ckpt> or model.pretrained=<official .pth>"),
     (["backend=onnxruntime"], "backend=onnxruntime needs onnx=<file written by")],
)  # fmt: skip
def test_the_weights_the_backend_reads_are_required(
    weights: list[str], expected: str, tmp_path, monkeypatch
) -> None:
    assert _refused_weights(weights, tmp_path, monkeypatch).startswith(expected)


def _refused_weights(weights: list[str], tmp_path, monkeypatch) -> str:
    """predict's refusal of the ``weights`` overrides (existing files: only the combination is
    wrong), before anything loads."""
    from hydra import compose, initialize_config_dir

    from detr_lightning.predict import predict
    from detr_lightning.utils import conf_dir
    from detr_lightning.utils.config_check import ConfigError

    monkeypatch.chdir(tmp_path)
    for name in ("model.onnx", "run.ckpt", "detr.pth", "x.png"):
        (tmp_path / name).write_bytes(b"")
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("predict", overrides=["experiment=shapes", "input=x.png", *weights])
    with pytest.raises(ConfigError) as err:
        predict(cfg)
    return str(err.value)


@pytest.mark.parametrize("inputs", [[], ["input=images"]])
def test_a_wrong_device_is_refused_before_the_data_is_read(
    inputs: list[str], tmp_path, monkeypatch
) -> None:
    """``device=cuda`` without a GPU was refused only after the datamodule was built (the
    evaluation split's annotations read) or the input folder searched."""
    from hydra_jobs import compose_job

    from detr_lightning.inference import image_search
    from detr_lightning.predict import predict
    from detr_lightning.utils import build
    from detr_lightning.utils.config_check import ConfigError

    def read_data(*args, **kwargs):
        raise AssertionError("the data was read before the device was checked")

    monkeypatch.setattr(build, "build_datamodule", read_data)
    monkeypatch.setattr(image_search, "find_images", read_data)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.ckpt").write_bytes(b"")
    (tmp_path / "images").mkdir()
    cfg = compose_job(["experiment=shapes", f"ckpt_path={tmp_path / 'run.ckpt'}", "device=cuda",
                       f"paths.shapes_dir={tmp_path / 'shapes'}", *inputs], tmp_path,
                      name="predict")  # fmt: skip
    with pytest.raises(ConfigError, match=r"^device=cuda: torch sees no CUDA GPU"):
        predict(cfg)


def test_a_json_that_fails_to_write_leaves_no_partial_file(
    tmp_path, image_folder, monkeypatch
) -> None:
    """predictions.json and images.json are written whole or not at all: images.json failing
    half-way (here: a value json cannot encode) used to leave its first bytes on disk."""
    from hydra_jobs import compose_job

    from detr_lightning.inference import results
    from detr_lightning.predict import predict

    release = official_release(tmp_path / "detr-tiny.pth")
    monkeypatch.setattr(results, "images_json", lambda *a, **k: {"info": "x", "images": {1}})
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "pred"
    cfg = compose_job(["experiment=r50", f"model.pretrained={release}", f"input={image_folder}",
                       f"output_dir={out_dir}", "num_workers=0", "device=cpu", "progress=false",
                       "paths.coco_dir=/nonexistent", *TINY_DETR], tmp_path, name="predict")  # fmt: skip
    with pytest.raises(TypeError, match="not JSON serializable"):
        predict(cfg)
    assert len(json.loads((out_dir / "predictions.json").read_text())) > 0  # whole
    assert not (out_dir / "images.json").exists()
    assert [p.name for p in out_dir.iterdir() if p.name.startswith(".")] == []  # no temp file
