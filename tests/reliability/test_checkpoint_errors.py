"""Every bad checkpoint fails with one message naming the file, the reason and the fix, for
``ckpt_path=`` (train, eval, predict) as for ``model.pretrained=``; nothing is ever unpickled
unsafely."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import pytest
import torch
from hydra_jobs import compose_job
from lit import loader, quiet_trainer, tiny_lit
from release_files import TINY_DETR, official_state_dict
from reliability_support import run

from detr_lightning.checkpointing.optimizer_groups import check_optimizer_groups
from detr_lightning.checkpointing.pretrained import load_pretrained
from detr_lightning.checkpointing.read import RESAVE_EXAMPLE, CheckpointLoadError, read_checkpoint
from detr_lightning.checkpointing.validate import (
    check_lightning_checkpoint,
    check_lightning_entries,
)
from detr_lightning.utils.build import build_run


class _Payload:
    """Unpickling it would create ``path``: proof of code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (builtins.exec, (f"open({self.path!r}, 'w').close()",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A real Lightning checkpoint (1 step of the tiny model) and broken variants of it, plus
    official-format release files."""
    d = tmp_path_factory.mktemp("ckpts")
    trainer = quiet_trainer(d, max_steps=1)
    trainer.fit(tiny_lit(), train_dataloaders=loader(1))
    good = d / "good.ckpt"
    trainer.save_checkpoint(good)
    data = good.read_bytes()
    (d / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (d / "empty.ckpt").write_bytes(b"")
    damaged = bytearray(data)  # bytes flipped inside the tensor data: torch.load does not notice
    at = len(data) // 3
    damaged[at : at + 4000] = bytes(b ^ 0xFF for b in damaged[at : at + 4000])
    (d / "corrupt.ckpt").write_bytes(bytes(damaged))
    torch.save({"state_dict": {}, "x": _Payload(str(d / "PWNED"))}, d / "unsafe.ckpt")
    official = official_state_dict(tiny_lit().net)
    torch.save({"model": official}, d / "release.pth")
    (d / "release_truncated.pth").write_bytes((d / "release.pth").read_bytes()[:5000])
    torch.save({"model": official, "args": _Payload(str(d / "PWNED"))}, d / "release_unsafe.pth")
    (d / "train.json").write_text('{"images": [], "annotations": []}')
    (d / "notes.txt").write_text("epoch 3: AP 0.41\n")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    # what "keep the weights only" gives: Lightning then fails with KeyError on its version
    torch.save({"state_dict": torch.load(good, weights_only=True)["state_dict"]},
               d / "weights_only.ckpt")  # fmt: skip
    return {p.stem: p for p in d.iterdir()}


def test_damaged_bytes_inside_a_checkpoint_are_named(files) -> None:
    with pytest.raises(CheckpointLoadError) as err:
        read_checkpoint(files["corrupt"])
    msg = str(err.value)
    assert msg.startswith(f"ckpt_path={files['corrupt']}: the file is corrupt: the bytes of its ")
    assert re.search(r"member '[^']+/data/\d+' do not match the CRC-32", msg)  # a tensor's
    assert "Fix: copy or download it again" in msg and "ckpt_path=last" in msg


@pytest.mark.parametrize("name", ["truncated", "empty"])
def test_truncated_checkpoint_is_named(files, name: str) -> None:
    with pytest.raises(CheckpointLoadError) as err:
        read_checkpoint(files[name])
    msg = str(err.value)
    assert f"ckpt_path={files[name]}" in msg and "truncated or corrupt" in msg and "Fix:" in msg


@pytest.mark.parametrize(("name", "head"), [("train", "b'{\"images\": [], "),
                                            ("notes", "b'epoch 3: AP 0.4"),
                                            ("image", "b'\\x89PNG")])  # fmt: skip
@pytest.mark.parametrize("key", ["ckpt_path", "model.pretrained"])
def test_a_file_that_is_no_checkpoint_is_named(files, name: str, head: str, key: str) -> None:
    path = next(p for p in files.values() if p.stem == name)
    with pytest.raises(CheckpointLoadError) as err:
        read_checkpoint(path, key)
    msg = str(err.value)
    assert msg.startswith(f"{key}={path}: not a PyTorch checkpoint (it starts with {head}")
    assert "unsafe" not in msg and "weights_only" not in msg and f"Fix: point {key} at " in msg
    # one message: torch's own (its weights_only=False advice) is not chained above it
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_unsafe_checkpoint_is_refused_unexecuted(files) -> None:
    with pytest.raises(CheckpointLoadError) as err:
        read_checkpoint(files["unsafe"])
    msg = str(err.value)
    assert f"ckpt_path={files['unsafe']}" in msg and "unsafe unpickling" in msg
    assert "exec" in msg and "Fix:" in msg  # torch's reason: the blocked global
    assert not (files["unsafe"].parent / "PWNED").exists()


def test_a_weights_only_ckpt_names_the_missing_entries(files) -> None:
    checkpoint = read_checkpoint(files["weights_only"])
    for check in (lambda: check_lightning_entries(checkpoint, "w.ckpt"),
                  lambda: check_lightning_checkpoint(checkpoint, tiny_lit(), "w.ckpt")):  # fmt: skip
        with pytest.raises(CheckpointLoadError) as err:
            check()
        msg = str(err.value)
        assert msg.startswith("ckpt_path=w.ckpt: a Lightning checkpoint lacks "
                              "'hyper_parameters', 'pytorch-lightning_version'")  # fmt: skip
        assert "Fix: " in msg and RESAVE_EXAMPLE in msg


def test_the_suggested_resave_recipe_gives_a_usable_checkpoint(files, tmp_path) -> None:
    """The recipe of the unsafe-file message, run on a real .ckpt, loads in Lightning (which
    failed with KeyError 'pytorch-lightning_version' on the weights-only recipe) and keeps the
    class count that predict reads."""
    ckpt = torch.load(files["good"], map_location="cpu", weights_only=False)
    new_path = tmp_path / "resaved.ckpt"
    exec(RESAVE_EXAMPLE, {"torch": torch, "ckpt": ckpt, "new_path": new_path})  # noqa: S102
    checkpoint = read_checkpoint(new_path)
    check_lightning_checkpoint(checkpoint, tiny_lit(), str(new_path))  # no error
    assert checkpoint["hyper_parameters"]["num_classes"] == 3
    model = tiny_lit()
    quiet_trainer(tmp_path).validate(model, dataloaders=loader(1), ckpt_path=new_path,
                                     verbose=False)  # fmt: skip
    for name, value in model.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][name]), name


def test_other_architecture_and_class_count_are_named(files) -> None:
    checkpoint = read_checkpoint(files["good"])
    check_lightning_checkpoint(checkpoint, tiny_lit(), str(files["good"]))  # fits: no error
    with pytest.raises(
        CheckpointLoadError, match=r"query_embed.weight \(5, 32\) vs model \(7, 32\)"
    ):
        check_lightning_checkpoint(checkpoint, tiny_lit(num_queries=7), str(files["good"]))
    with pytest.raises(CheckpointLoadError) as err:
        check_lightning_checkpoint(checkpoint, tiny_lit(num_classes=6), str(files["good"]))
    msg = str(err.value)
    assert f"ckpt_path={files['good']}" in msg and "trained with 3 classes" in msg
    assert "has 6" in msg and "class_embed.weight" in msg and "Fix:" in msg


def test_changed_optimizer_groups_are_named_before_resuming(files) -> None:
    checkpoint = read_checkpoint(files["good"])
    lit = tiny_lit()
    check_optimizer_groups(checkpoint, lit, "good.ckpt")  # the groups it was trained with
    backbone = sum(p.requires_grad for p in lit.net.backbone.parameters())
    main = sum(p.requires_grad for p in lit.parameters()) - backbone
    attn = sum(p.requires_grad for n, p in lit.net.named_parameters() if "multihead_attn" in n)
    with pytest.raises(CheckpointLoadError) as err:
        check_optimizer_groups(checkpoint, tiny_lit(lr_multipliers={"multihead_attn": 0.1}),
                               "good.ckpt")  # fmt: skip
    msg = str(err.value)
    assert msg.startswith("ckpt_path=good.ckpt: ") and "~model.lr_multipliers" in msg
    assert f"groups main ({main} tensors), backbone ({backbone} tensors);" in msg
    assert (f"builds main ({main - attn} tensors), multihead_attn ({attn} tensors), "
            f"backbone ({backbone} tensors)") in msg  # fmt: skip
    with pytest.raises(CheckpointLoadError, match=r"builds main \(\d+ tensors\), so"):
        check_optimizer_groups(checkpoint, tiny_lit(lr_backbone=0.0), "good.ckpt")


def test_release_file_given_as_ckpt_path_says_use_pretrained(files) -> None:
    with pytest.raises(CheckpointLoadError, match="model.pretrained=PATH"):
        check_lightning_checkpoint(read_checkpoint(files["release"]), tiny_lit(), "x.pth")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("release_truncated", "truncated or corrupt"), ("release_unsafe", "unsafe unpickling"),
     ("good", "a Lightning checkpoint of this project")],
)  # fmt: skip
def test_pretrained_errors_are_named(files, name: str, reason: str) -> None:
    with pytest.raises(CheckpointLoadError) as err:
        load_pretrained(tiny_lit(), files[name])
    msg = str(err.value)
    assert msg.startswith(f"model.pretrained={files[name]}: ") and reason in msg
    assert not (files[name].parent / "PWNED").exists()


def test_pretrained_of_another_architecture_is_named(files) -> None:
    with pytest.raises(CheckpointLoadError) as err:
        load_pretrained(tiny_lit(num_queries=7), files["release"])
    msg = str(err.value)
    assert msg.startswith(f"model.pretrained={files['release']}: ") and "query_embed" in msg
    assert "Check that" in msg  # official.py's fix


@pytest.mark.parametrize("stage", ["fit", "test", "predict"])
@pytest.mark.parametrize(
    "name", ["truncated", "corrupt", "unsafe", "good", "weights_only", "train"]
)
def test_entry_points_name_the_checkpoint(files, tmp_path, shapes_root, stage: str,
                                          name: str) -> None:  # fmt: skip
    """build_run is what train/eval/predict start with; "good" is the tiny model's checkpoint,
    which does not fit the shapes model."""
    config = "train" if stage == "fit" else ("eval" if stage == "test" else "predict")
    cfg = compose_job([f"paths.shapes_dir={shapes_root}", f"ckpt_path={files[name]}"], tmp_path,
                      name=config)  # fmt: skip
    with pytest.raises(CheckpointLoadError) as err:
        build_run(cfg, stage)
    assert f"ckpt_path={files[name]}" in str(err.value) and "Fix:" in str(err.value)
    if name == "corrupt":  # refused for its damage, before its (mismatched) weights are compared
        assert "the file is corrupt" in str(err.value)


def test_predict_names_a_weights_only_ckpt_before_building(files, tmp_path, shapes_root) -> None:
    """predict reads the class count from the hyper-parameters (it used to say "model.num_classes
    is unknown" for a file without them)."""
    from detr_lightning.inference.loading import load_detector

    cfg = compose_job([f"paths.shapes_dir={shapes_root}", f"ckpt_path={files['weights_only']}"],
                      tmp_path, name="predict")  # fmt: skip
    with pytest.raises(CheckpointLoadError, match="lacks 'hyper_parameters'") as err:
        load_detector(cfg)
    assert str(err.value).startswith(f"ckpt_path={files['weights_only']}: ")


@pytest.mark.slow  # the in-process build_run test above covers the message; this, the exit
def test_cli_names_a_truncated_checkpoint(files, tmp_path, shapes_root) -> None:
    proc = run("eval", [f"paths.shapes_dir={shapes_root}", f"ckpt_path={files['truncated']}"],
               tmp_path, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"ckpt_path={files['truncated']}: the file is truncated or corrupt" in out


TINY_R50 = ["experiment=r50", "data=shapes", "trainer=cpu", *TINY_DETR]


@pytest.mark.parametrize(("stage", "config"), [("test", "eval"), ("predict", "predict")])
def test_a_release_of_other_classes_is_refused_outside_training(
    tmp_path, shapes_root, stage: str, config: str
) -> None:
    """A release's class head re-initialised for the data's 5 classes would be random: eval and
    predict on the data refuse it; training fine-tunes from it (the head re-initialised)."""
    from types import SimpleNamespace

    from detr_lightning.utils.build import build_model

    overrides = [*TINY_R50, f"paths.shapes_dir={shapes_root}"]
    coco = build_model(compose_job(overrides, tmp_path), SimpleNamespace(num_classes=91))
    release = tmp_path / "detr-tiny.pth"
    torch.save({"model": official_state_dict(coco.net)}, release)
    overrides.append(f"model.pretrained={release}")
    with pytest.raises(CheckpointLoadError) as err:
        build_run(compose_job(overrides, tmp_path, name=config), stage)
    msg = str(err.value)
    assert msg.startswith(f"model.pretrained={release}: the release has 91 classes and the data 5")
    assert "Fix: fine-tune first" in msg and "data.coco_id_space=true" in msg
    if stage == "predict":  # predict's own loader, on the evaluation split's label map
        from detr_lightning.inference.loading import load_detector
        from detr_lightning.utils.build import build_datamodule

        cfg = compose_job(overrides, tmp_path, name=config)
        with pytest.raises(CheckpointLoadError, match="the release has 91 classes and the data 5"):
            load_detector(cfg, build_datamodule(cfg))
        return
    _, model, _ = build_run(compose_job(overrides, tmp_path), "fit")
    assert model.net.class_embed.weight.shape[0] == 6
    assert torch.equal(model.net.query_embed.weight, coco.net.query_embed.weight)


def test_a_release_without_the_mask_head_is_refused_outside_training(tmp_path) -> None:
    """A detection release in a panoptic model: fine-tuning trains the mask head from its
    initialisation; evaluation or inference would score it untrained."""
    from panoptic_support import tiny_panoptic_lit

    release = tmp_path / "detr-detection.pth"
    torch.save({"model": official_state_dict(tiny_panoptic_lit().net.detr)}, release)
    report = load_pretrained(tiny_panoptic_lit(), release)
    assert report["not_in_checkpoint"] and all(
        k.startswith(("mask_head.", "bbox_attention.")) for k in report["not_in_checkpoint"]
    )
    with pytest.raises(CheckpointLoadError) as err:
        load_pretrained(tiny_panoptic_lit(), release, fine_tuning=False)
    msg = str(err.value)
    assert msg.startswith(f"model.pretrained={release}: the release lacks ")
    assert "mask_head." in msg and "Fix: fine-tune first" in msg
