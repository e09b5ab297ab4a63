"""Hydra configs: every group option and every preset composes and instantiates."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from hydra_jobs import compose_job
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from detr_lightning.convergence.focal_scoring import FocalScoring, VarifocalScoring
from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.lit_module import LitDETR
from detr_lightning.stages import stage_overrides
from detr_lightning.utils import conf_dir
from detr_lightning.utils.build import check_task, instantiate_dict
from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.lr import build_scaled_optimizer
from detr_lightning.utils.run_component_keys import check_model_keys

CONF = Path(conf_dir())
REPO = CONF.parent
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
GROUPS = ["backbone", "schedule", "head", "data", "trainer", "logger", "callbacks", "posenc",
          "losses", "cls_loss"]  # fmt: skip
LEVER_GROUPS = ["queries", "refine", "denoiser", "aux_head", "attention_prior", "cross_attention",
                "decoder_hook"]  # fmt: skip
LEVER_OPTIONS = [(g, p.stem) for g in LEVER_GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
PAPER = ["r50", "dc5_r50", "r101", "dc5_r101"]


def resolved(cfg: DictConfig) -> dict:
    """The job config fully resolved (the hydra node holds run-time-only values)."""
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    return OmegaConf.to_container(job, resolve=True, throw_on_missing=True)


def test_conf_experiment_is_the_experiments_folder() -> None:
    assert (CONF / "experiment").resolve() == (REPO / "experiments").resolve()
    assert {"shapes", *PAPER, *(f"{p}_300ep" for p in PAPER)} <= set(EXPERIMENTS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes(group: str, option: str, tmp_path) -> None:
    extra = [f"data.{k}=/d/{k}" for k in ("train_images", "train_ann", "val_images", "val_ann")]
    cfg = compose_job([f"{group}={option}", *(extra if option == "custom" else [])], tmp_path)
    assert cfg.hydra.runtime.choices[group] == option
    resolved(cfg)
    if group == "backbone" and option in ("compact", "narrow_r18"):
        assert "convergence" in cfg.model.net.backbone._target_
        assert "pretrained" not in cfg.model.net.backbone
    elif group == "backbone" and option != "resnet":
        depth = option.split("_r")[-1].lstrip("r")
        assert cfg.model.net.backbone.name == f"resnet{depth}"
        assert cfg.model.net.backbone.dilation == option.startswith("dc5")
    if group == "schedule" and option.endswith("ep"):
        epochs = int(option[:-2])
        assert cfg.trainer.max_epochs == epochs
        assert cfg.model.lr_schedule.drop_epochs == [epochs - 100]


def test_cpu_group_objects_instantiate(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    for logger in ("csv", "wandb", "none"):
        cfg = compose_job([f"logger={logger}"], tmp_path)
        made = instantiate_dict(cfg.logger)
        assert len(made) == (0 if logger == "none" else 1)
    cfg = compose_job([], tmp_path)
    names = [type(c).__name__ for c in instantiate_dict(cfg.callbacks)]
    assert names == ["BestAndLastCheckpoint", "RichProgressBar", "RichModelSummary",
                     "ValidationImageLogger", "AttentionMapLogger", "ElapsedTime"]  # fmt: skip
    for trainer in ("cpu", "ddp_cpu"):
        cfg = compose_job([f"trainer={trainer}"], tmp_path)
        t = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        # The default experiment (shapes) clips at 1.0 instead of the paper's 0.1.
        assert t.gradient_clip_val == 1.0 and t.num_devices == (2 if trainer == "ddp_cpu" else 1)


def _model_on_meta(cfg: DictConfig) -> LitDETR:
    with open_dict(cfg):
        cfg.model.num_classes = 91
        if "pretrained" in cfg.model.net.backbone:
            cfg.model.net.backbone.pretrained = False
    with torch.device("meta"):
        return instantiate(cfg.model, _convert_="all")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # reading hydra.run.dir claims the folder (utils.fresh_dir)
    overrides = [f"experiment={name}"]
    if name == "shapes_finetune":
        overrides.append("model.pretrained=/some/detr-r50.pth")
    cfg = compose_job(overrides, tmp_path, run_dirs=False)
    assert cfg.experiment_name == name and cfg.run_name.startswith(name)
    assert f"outputs/{name}/" in cfg.hydra.run.dir and f"multirun/{name}/" in cfg.hydra.sweep.dir
    resolved(cfg)
    model = _model_on_meta(cfg)
    assert model.net.num_queries == cfg.model.net.num_queries
    assert model.net.transformer.d_model == cfg.model.net.transformer.d_model
    assert len(model.net.transformer.encoder.layers) == cfg.model.net.transformer.num_encoder_layers
    assert model.hparams.lr_backbone == cfg.model.lr_backbone
    assert instantiate_dict(cfg.callbacks)


def test_shapes_plain_is_the_papers_detr_at_cpu_size(tmp_path) -> None:
    cfg = compose_job(["experiment=shapes_plain"], tmp_path)
    lit = _model_on_meta(cfg)
    # No lever at all: the paper's DETR class, the paper's losses, weights and schedule rules.
    assert type(lit.net).__name__ == "DETR"
    assert type(lit.criterion.scoring) is SoftmaxScoring is type(lit.postprocess.scoring)
    assert getattr(lit.criterion, "encoder_matcher", None) is None
    assert lit.criterion.weight_dict == {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2}
    assert (lit.hparams.lr_backbone, cfg.model.lr_schedule.warmup_steps) == (1e-5, 0)
    assert (
        "step_schedule" in cfg.model.lr_schedule._target_ and cfg.trainer.gradient_clip_val == 0.1
    )
    backbone = cfg.model.net.backbone
    assert (backbone.name, backbone.norm, backbone.train_stem, "width" in backbone) == (
        "resnet18", "frozen_bn", False, False)  # fmt: skip
    assert cfg.model.net.transformer.dropout == 0.1


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_follow_the_paper(name: str, tmp_path) -> None:
    cfg = compose_job([f"experiment={name}"], tmp_path)
    m = cfg.model
    assert (m.optimizer.lr, m.lr_backbone, m.optimizer.weight_decay) == (1e-4, 1e-5, 1e-4)
    assert (cfg.trainer.max_epochs, m.lr_schedule.drop_epochs, m.lr_schedule.gamma) == (
        500, [400], 0.1)  # fmt: skip
    assert cfg.trainer.gradient_clip_val == 0.1 and cfg.trainer.strategy is not None
    t = m.net.transformer
    assert (t.d_model, t.nhead, t.num_encoder_layers, t.num_decoder_layers) == (256, 8, 6, 6)
    assert (t.dim_feedforward, t.dropout, m.net.num_queries) == (2048, 0.1, 100)
    assert m.criterion.eos_coef == 0.1 and m.net.backbone.pretrained
    assert dict(m.criterion.weight_dict) == {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2}
    assert m.net.backbone.dilation == name.startswith("dc5")
    short = compose_job([f"experiment={name}_300ep"], tmp_path)
    assert (short.trainer.max_epochs, short.model.lr_schedule.drop_epochs) == (300, [200])


PAPER_RUNS = [*PAPER, *(f"{p}_300ep" for p in PAPER), "r50_panoptic", "dc5_r50_panoptic",
              "r101_panoptic", "ablation_enc_layers", "ablation_posenc", "ablation_loss",
              "ablation_ffn"]  # fmt: skip


@pytest.mark.parametrize("name", PAPER_RUNS)
def test_paper_runs_report_the_final_model_not_the_best_epoch(name: str, tmp_path) -> None:
    # The paper and the official model zoo report the final model; val2017 is also the test
    # split here, so the best val/AP epoch would be chosen on the test data. Without a monitor
    # the kept (and tested) checkpoint is the latest epoch's.
    cfg = compose_job([f"experiment={name}"], tmp_path)
    assert cfg.callbacks.model_checkpoint.monitor is None
    if cfg.stages:  # panoptic: the mask head starts from the box model's last checkpoint
        for _, overrides in stage_overrides(cfg):
            assert not any("model_checkpoint.monitor" in o for o in overrides), overrides


def test_one_paper_preset_fully_instantiates_and_runs(tmp_path) -> None:
    cfg = compose_job(["experiment=r50_300ep", "model.net.backbone.pretrained=false"], tmp_path)
    with open_dict(cfg):
        cfg.model.num_classes = 91
    model = instantiate(cfg.model, _convert_="all").eval()
    n = sum(p.numel() for p in model.net.parameters())
    assert 41.0e6 < n < 41.7e6  # the paper's 41M for DETR-R50
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 128), torch.ones(1, 96, 128, dtype=torch.bool))
    assert out["pred_logits"].shape == (1, 100, 92) and len(out["aux_outputs"]) == 5


POSENC_ROWS = {  # paper Table 3: (kind, encoder, decoder, queries)
    "no_spatial": ("sine", "none", "none", "input"),
    "sine_at_input": ("sine", "input", "input", "input"),
    "learned_at_attn": ("learned", "attn", "attn", "attn"),
    "no_encoder_spatial": ("sine", "none", "attn", "attn"),
    "baseline": ("sine", "attn", "attn", "attn"),
}


def test_ablation_sweeps_cover_the_paper_rows(tmp_path) -> None:
    def params(name: str) -> dict:
        cfg = compose_job([f"experiment={name}"], tmp_path)
        assert cfg.trainer.max_epochs == 300 and cfg.model.net.backbone.name == "resnet50"
        return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}

    assert params("ablation_enc_layers") == {
        "model.net.transformer.num_encoder_layers": ["0", "3", "6", "12"]
    }
    assert params("ablation_ffn") == {"model.net.transformer.use_ffn": ["true", "false"]}
    assert params("ablation_dec_layers") == {"model.eval_decoder_layer": list("012345")}
    assert params("ablation_loss") == {"losses": ["class_l1", "class_giou", "class_l1_giou"]}
    assert sorted(params("ablation_posenc")["posenc"]) == sorted(POSENC_ROWS)
    for row, (kind, enc, dec, query) in POSENC_ROWS.items():
        net = compose_job(["experiment=ablation_posenc", f"posenc={row}"], tmp_path).model.net
        got = (
            net.position_encoding.kind,
            *(net.transformer[f"{k}_pos"] for k in ("encoder", "decoder", "query")),
        )  # noqa: E501
        assert got == (kind, enc, dec, query), row
    for row, zero in (("class_l1", "loss_giou"), ("class_giou", "loss_bbox")):
        crit = compose_job([f"losses={row}"], tmp_path).model.criterion
        assert crit.weight_dict[zero] == 0 and crit.weight_dict["loss_ce"] == 1


def test_panoptic_head_needs_panoptic_data(tmp_path) -> None:
    # The head is implemented; on detection data (the default preset picks data=shapes) it stops
    # at once, naming the data configs to use.
    cfg = compose_job(["head=panoptic"], tmp_path)
    with pytest.raises(ValueError, match="head=panoptic needs panoptic data.*data=shapes_panoptic"):
        check_task(cfg)
    check_task(compose_job(["head=panoptic", "data=shapes_panoptic"], tmp_path))
    check_task(compose_job(["experiment=shapes_panoptic"], tmp_path))


@pytest.mark.parametrize("name", ["r50_panoptic", "dc5_r50_panoptic", "r101_panoptic"])
def test_panoptic_presets_train_on_crowd_segments_as_official(name: str, tmp_path) -> None:
    # The official CocoPanoptic keeps every segment, crowd ones included, as a target in both
    # stages (the box model and the mask head); its detection data drops them.
    cfg = compose_job([f"experiment={name}"], tmp_path)
    assert _model_on_meta(cfg).hparams.train_on_crowd is True
    assert _model_on_meta(compose_job(["experiment=r50"], tmp_path)).hparams.train_on_crowd is False


def test_custom_data_requires_its_paths(tmp_path) -> None:
    cfg = compose_job(["data=custom"], tmp_path)
    with pytest.raises(MissingMandatoryValue, match="train_images"):
        instantiate(cfg.data)


def test_make_train_prints_the_composed_config() -> None:
    env = {**os.environ, "PY": sys.executable}
    out = subprocess.run(
        ["make", "-s", "train", "EXP=dc5_r101", "ARGS=--cfg job", f"PY={sys.executable}"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert "name: resnet101\n      dilation: true" in out and "max_epochs: 500" in out
    direct = subprocess.run(
        [sys.executable, "-m", "detr_lightning.train", "experiment=dc5_r101", "--cfg", "job"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert direct == out


@pytest.mark.parametrize("target", ["train", "eval", "predict", "visualize", "export", "sweep"])
def test_make_targets_put_multirun_before_the_overrides(target: str) -> None:
    """Hydra's parser takes no override after a flag, so ``ARGS='data=shapes -m trainer=cpu'``
    must reach it with -m first: each target's command line parses with Hydra's own parser."""
    from hydra._internal.utils import get_args_parser

    make = ["make", "-n", "-s", target, "CKPT=c.ckpt", "INPUT=i.png",
            "ARGS=data=shapes -m trainer=cpu"]  # fmt: skip
    printed = subprocess.run(make, cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=60).stdout.replace("\\\n", " ")  # fmt: skip
    argv = shlex.split(printed)
    args = get_args_parser().parse_args(argv[argv.index("-m") + 2 :])  # after "-m <module>"
    assert args.multirun
    assert {"data=shapes", "trainer=cpu", "experiment=shapes"} <= set(args.overrides)


@pytest.mark.parametrize("target", ["train", "eval", "predict", "visualize", "export", "sweep"])
def test_make_targets_pass_quoted_args_byte_for_byte(target: str) -> None:
    """ARGS went through make's filter-out (to move -m first), which joins words with one space:
    "paths.shapes_dir='/data/my  shapes'" reached Hydra as '/data/my shapes'."""
    from hydra._internal.utils import get_args_parser

    quoted = "\"paths.shapes_dir='/data/my  shapes   2'\""
    make = ["make", "-n", "-s", target, "CKPT=c.ckpt", "INPUT=i.png",
            f"ARGS=data=shapes {quoted} --multirun trainer=cpu"]  # fmt: skip
    printed = subprocess.run(make, cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=60).stdout  # fmt: skip
    assert quoted in printed
    argv = shlex.split(printed.replace("\\\n", " "))
    args = get_args_parser().parse_args(argv[argv.index("-m") + 2 :])  # after "-m <module>"
    assert args.multirun
    assert "paths.shapes_dir='/data/my  shapes   2'" in args.overrides
    assert {"data=shapes", "trainer=cpu", "experiment=shapes"} <= set(args.overrides)


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("written", ["outputs/shapes/t/metrics.json", "report/report.md"])
def test_what_the_make_targets_write_is_ignored_by_git(written: str) -> None:
    """make train writes outputs/, make report with several RUNS and no OUT writes ./report/."""
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", written], cwd=REPO,
                          capture_output=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, f"{written} would show as untracked in git status"


def test_make_data_passes_args_to_the_generator() -> None:
    """The generator's message for existing data says ``--force``: through make, ARGS gives it."""
    make = ["make", "-n", "-s", "data", "ARGS=--force --val 10"]
    printed = subprocess.run(make, cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=60).stdout  # fmt: skip
    command = shlex.split(printed)
    assert command[1:] == ["-m", "detr_lightning.data.shapes", "--out", "data/shapes", "--force",
                           "--val", "10"]  # fmt: skip


@pytest.mark.parametrize("target", ["eval", "predict"])
def test_make_eval_and_predict_without_weights_print_their_usage(target: str) -> None:
    """``make eval`` right after ``make train``: no CKPT and no weights in ARGS. The make variable
    to set is named (CKPT=, CKPT=last), not the Hydra key a make user cannot pass directly."""
    make = ["make", "-s", target, "PY=false"]  # PY=false: the entry point must not be reached
    proc = subprocess.run(make, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stdout.startswith(f"usage: make {target} CKPT=<run dir>/checkpoints/last.ckpt")
    assert "CKPT=last: the newest run of EXP" in proc.stdout


@pytest.mark.parametrize(
    ("target", "args"),
    [("eval", "ARGS=model.pretrained=x.pth"), ("eval", "CKPT=last"),
     ("predict", "ARGS=backend=onnxruntime onnx=m.onnx"), ("predict", "CKPT=c.ckpt"),
     # quoted for the shell, as the README shows for a path with a space
     ("eval", "ARGS=\"ckpt_path='/runs/a b/last.ckpt'\""),
     ("predict", "ARGS='model.pretrained=/w/my weights.pth'")],
)  # fmt: skip
def test_make_eval_and_predict_pass_ckpt_path_only_when_given(target: str, args: str) -> None:
    """Weights in CKPT or in ARGS run the entry point, with ``ckpt_path=`` only from CKPT (no
    empty ``ckpt_path=`` override: it showed in the report's overrides column)."""
    make = ["make", "-n", "-s", target, args]
    printed = subprocess.run(make, cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=60).stdout.replace("\\\n", " ")  # fmt: skip
    command = shlex.split(printed.splitlines()[-1])
    assert command[1:3] == ["-m", f"detr_lightning.{target}"]
    variable, given = args.split("=", 1)
    expected = [f"ckpt_path='{given}'"] if variable == "CKPT" else shlex.split(given)
    assert set(expected) <= set(command)
    ckpt_args = [a for a in command if a.startswith("ckpt_path=")]
    assert ckpt_args == ([f"ckpt_path='{given}'"] if variable == "CKPT" else
                         [a for a in expected if a.startswith("ckpt_path=")])  # fmt: skip
    # make -n only prints the weights check: run it, with an entry point that does nothing
    ran = subprocess.run(["make", "-s", target, "PY=true", args], cwd=REPO, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 0 and "usage" not in ran.stdout, ran.stdout


@pytest.mark.parametrize(
    ("target", "variables"),
    [("eval", {"CKPT": "ckpt_path"}),
     ("predict", {"CKPT": "ckpt_path", "INPUT": "input", "OUT": "output_dir"}),
     ("visualize", {"CKPT": "ckpt_path", "INPUT": "input", "OUT": "output_dir"}),
     ("export", {"CKPT": "ckpt_path", "OUT": "output"})],
)  # fmt: skip
def test_make_passes_each_path_whole_to_hydra(target: str, variables: dict[str, str]) -> None:
    """A path with a space, a non-ASCII letter, ``=`` and ``,`` reaches the entry point as one
    argument that Hydra's override parser reads back as that path (unquoted, it split in two or
    did not parse)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    paths = {v: f"/tmp/a {v.lower()} é/run=1,2/x" for v in variables}
    make = ["make", "-n", "-s", target, *(f"{v}={p}" for v, p in paths.items())]
    printed = subprocess.run(make, cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=60).stdout.replace("\\\n", " ")  # fmt: skip
    command = shlex.split(printed.splitlines()[-1])
    parser = OverridesParser.create()
    parsed = {}
    for arg in command[3:]:
        override = parser.parse_override(arg)
        parsed[override.key_or_group] = override.value()
    assert {key: parsed[key] for key in variables.values()} == {
        key: paths[variable] for variable, key in variables.items()
    }


LEVER_STACKS = {  # a lever option needs the convergence model and what it pairs with
    "queries=learned": [],
    "queries=anchors": ["refine=boxes"],
    "queries=proposals": ["refine=boxes"],
    "queries=grid": ["refine=boxes"],
    "refine=boxes": ["queries=anchors"],
    "denoiser=dn": [],
    "aux_head=conv": [],
    "attention_prior=box": ["queries=anchors", "refine=boxes"],
    "cross_attention=deformable": ["queries=anchors", "refine=boxes"],
    "cross_attention=multiscale": ["queries=anchors", "refine=boxes", "backbone=compact"],
    "decoder_hook=conditional": [],
}


@pytest.mark.parametrize(
    ("group", "option"), LEVER_OPTIONS, ids=[f"{g}={o}" for g, o in LEVER_OPTIONS]
)
def test_every_lever_option_builds_on_the_convergence_model(group, option, tmp_path) -> None:
    extra = LEVER_STACKS[f"{group}={option}"]
    cfg = compose_job(["experiment=shapes_plain", "model=convergence", f"{group}={option}", *extra],
                      tmp_path)  # fmt: skip
    lit = _model_on_meta(cfg)
    assert type(lit.net).__name__ == "ConvergenceDETR"


@pytest.mark.parametrize(
    ("group", "option"),
    LEVER_OPTIONS + [("cls_loss", "focal"), ("cls_loss", "varifocal")],
    ids=[f"{g}={o}" for g, o in LEVER_OPTIONS] + ["cls_loss=focal", "cls_loss=varifocal"],
)
def test_a_lever_on_the_papers_model_names_the_group_and_the_fix(group, option, tmp_path) -> None:
    cfg = compose_job(["experiment=shapes_plain", f"{group}={option}"], tmp_path)
    with pytest.raises(ConfigError, match=rf"chosen here: {group}={option}.*model=convergence"):
        check_model_keys(cfg)
    check_model_keys(compose_job(["experiment=shapes_plain", "model=convergence", f"{group}={option}",
                                  *LEVER_STACKS.get(f"{group}={option}", [])], tmp_path))  # fmt: skip


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_no_preset_sets_a_key_its_target_rejects(name: str, tmp_path) -> None:
    check_model_keys(compose_job([f"experiment={name}"], tmp_path))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_a_schedule_chosen_on_the_command_line_wins_over_every_preset(name: str, tmp_path) -> None:
    """A preset sets its epochs and lr schedule through the schedule group, so ``schedule=smoke``
    replaces them all (a preset's own trainer.max_epochs would silently win over it)."""
    cfg = compose_job([f"experiment={name}", "schedule=smoke"], tmp_path)
    smoke = OmegaConf.load(CONF / "schedule" / "smoke.yaml")
    assert {key: cfg.trainer[key] for key in smoke.trainer} == dict(smoke.trainer)
    assert OmegaConf.to_container(cfg.model.lr_schedule) == OmegaConf.to_container(
        smoke.model.lr_schedule
    )
    assert cfg.trainer.get("max_time") is None  # no preset's hard stop left behind


def test_cls_loss_switches_head_matcher_criterion_and_postprocess_together(tmp_path) -> None:
    cfg = compose_job(["experiment=shapes_plain", "model=convergence", "cls_loss=focal"], tmp_path)
    lit = _model_on_meta(cfg)
    parts = (lit.net, lit.criterion, lit.criterion.matcher, lit.postprocess)
    assert {type(part.scoring) for part in parts} == {FocalScoring}
    assert lit.net.class_embed.out_features == lit.net.num_classes  # no "no object" column
    focal_target = "detr_lightning.convergence.focal_scoring.FocalScoring"
    one_part = ["experiment=shapes_plain", f"+model.postprocess.scoring._target_={focal_target}"]
    with pytest.raises(Exception, match="model.postprocess.scoring=FocalScoring.*cls_loss=focal"):
        _model_on_meta(compose_job(one_part, tmp_path))


def test_the_shapes_preset_is_varifocal_and_focal_without_iou_targets(tmp_path) -> None:
    lit = _model_on_meta(compose_job(["experiment=shapes"], tmp_path))
    parts = (lit.net, lit.criterion, lit.criterion.matcher, lit.postprocess)
    assert {type(part.scoring) for part in parts} == {VarifocalScoring}
    assert lit.criterion.weight_dict["loss_ce"] == 2.0
    focal = _model_on_meta(compose_job(["experiment=shapes", "cls_loss=focal"], tmp_path))
    assert type(focal.criterion.scoring) is FocalScoring


def test_the_shapes_preset_reads_with_deformable_attention_and_without_it_densely(
    tmp_path,
) -> None:
    net = _model_on_meta(compose_job(["experiment=shapes"], tmp_path)).net
    kinds = {type(layer.multihead_attn).__name__ for layer in net.transformer.decoder.layers}
    assert kinds == {"BoxDeformableAttention"}
    assert not net.detach_memory
    attn = net.transformer.decoder.layers[0].multihead_attn
    assert (attn.levels, attn.points) == (("c4",), 4)  # cross_attention=multiscale
    assert net.backbone.stages[0] == "c4" and attn.level_proj[0].in_features == 32
    single = _model_on_meta(compose_job(["experiment=shapes", "cross_attention=deformable"],
                                        tmp_path)).net  # fmt: skip
    attn = single.transformer.decoder.layers[0].multihead_attn
    assert (attn.levels, attn.points, single.backbone.stages) == ((), 8, ("p8",))
    net = _model_on_meta(compose_job(["experiment=shapes", "~cross_attention"], tmp_path)).net
    assert not net.deformable
    assert type(net.transformer.decoder.layers[0].multihead_attn).__name__ == "MultiheadAttention"


def test_the_panoptic_demo_wraps_the_shapes_detector_unchanged(tmp_path) -> None:
    # Only the head, the data and the stages differ: the detector, its loss and its training
    # data settings are the shapes preset's (docs/panoptic_demo.md: PQ 0.109 -> 0.351).
    shapes = compose_job(["experiment=shapes"], tmp_path)
    panoptic = compose_job(["experiment=shapes_panoptic"], tmp_path)
    assert panoptic.model.net == shapes.model.net
    for key in ("matcher", "scoring", "encoder_matcher"):
        assert panoptic.model.criterion[key] == shapes.model.criterion[key], key
    weights = dict(panoptic.model.criterion.weight_dict)
    assert (weights.pop("loss_mask"), weights.pop("loss_dice")) == (1.0, 1.0)
    assert weights == shapes.model.criterion.weight_dict
    for key in ("batch_size", "train_transforms", "val_transforms"):
        assert panoptic.data[key] == shapes.data[key], key
    lit = _model_on_meta(panoptic)
    assert type(lit.criterion.scoring) is VarifocalScoring is type(lit.net.scoring)
    assert lit.net.detr.deformable and not lit.net.detr.detach_memory
    attn = lit.net.detr.transformer.decoder.layers[0].multihead_attn
    assert attn.levels == ("c4",)


def test_the_multiscale_lever_reads_a_resnets_stage_by_name_and_names_the_returned_ones(
    tmp_path,
) -> None:
    resnet = ["experiment=shapes", "backbone=narrow_r18"]
    net = _model_on_meta(compose_job([*resnet, "model.net.cross_attention.levels=[layer1]"],
                                     tmp_path)).net  # fmt: skip
    attn = net.transformer.decoder.layers[1].multihead_attn
    assert attn.levels == ("layer1",) and attn.level_proj[0].in_features == 32  # half of 64
    with pytest.raises(
        Exception, match=r"names \['c4'\].*returns \['layer1', 'layer2', 'layer3'\]"
    ):
        _model_on_meta(compose_job(resnet, tmp_path))


def test_the_deformable_lever_trains_its_sampling_offsets_at_a_tenth_of_the_lr(tmp_path) -> None:
    for overrides, expect in ((["experiment=shapes"], True),
                              (["experiment=shapes", "~cross_attention"], False)):  # fmt: skip
        lit = _model_on_meta(compose_job(overrides, tmp_path))
        optimizer = build_scaled_optimizer(lit.net, lit.criterion, lit.optimizer_factory,
                                           lit.hparams, trainer=None)  # fmt: skip
        groups = {g["name"]: g for g in optimizer.param_groups}
        offsets = {id(p) for n, p in lit.net.named_parameters() if "sampling_offsets" in n}
        assert bool(offsets) == expect and ("sampling_offsets" in groups) == expect, overrides
        if expect:
            assert {id(p) for p in groups["sampling_offsets"]["params"]} == offsets
            assert groups["sampling_offsets"]["lr"] == pytest.approx(0.1 * groups["main"]["lr"])


def test_encoder_matcher_without_a_dense_head_is_explained(tmp_path) -> None:
    # encoder_matches / encoder_matcher used to be silently ignored without a dense head.
    matcher = "detr_lightning.convergence.center_matcher.CenterMatcher"
    cfg = compose_job(["experiment=shapes", "queries=anchors",
                       f"+model.criterion.encoder_matcher._target_={matcher}"], tmp_path)  # fmt: skip
    with pytest.raises(Exception, match="encoder_matcher"):
        _model_on_meta(cfg)


def test_an_enc_weight_without_a_dense_head_is_refused_when_the_model_is_built(tmp_path) -> None:
    # The shapes preset's loss_ce_enc used to be silently ignored with queries=anchors.
    cfg = compose_job(["experiment=shapes", "queries=anchors"], tmp_path)
    with pytest.raises(Exception, match=r"weight_dict has \['loss_ce_enc'\].*aux_head=conv"):
        _model_on_meta(cfg)
    _model_on_meta(compose_job(["experiment=shapes", "queries=anchors", "aux_head=conv"], tmp_path))
    _model_on_meta(compose_job(["experiment=shapes", "queries=anchors",
                                "~model.criterion.weight_dict.loss_ce_enc"], tmp_path))  # fmt: skip
    cfg = compose_job(["experiment=shapes", "~denoiser"], tmp_path)  # dn weights? none set: fine
    _model_on_meta(cfg)
    cfg = compose_job(["experiment=shapes", "~denoiser", "+model.criterion.weight_dict.loss_ce_dn=1"],
                      tmp_path)  # fmt: skip
    with pytest.raises(Exception, match=r"loss_ce_dn: denoiser=dn"):
        _model_on_meta(cfg)


def test_focal_criterion_rejects_an_eos_coef(tmp_path) -> None:
    # eos_coef used to be silently ignored under focal.
    cfg = compose_job(["experiment=shapes", "+model.criterion.eos_coef=0.1"], tmp_path)
    with pytest.raises(Exception, match="eos_coef"):
        _model_on_meta(cfg)


def _bench_variants() -> dict[str, list[str]]:
    spec = importlib.util.spec_from_file_location(
        "convergence_bench", REPO / "benchmarks" / "convergence.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VARIANTS


@pytest.mark.parametrize(("name", "overrides"), list(_bench_variants().items()))
def test_every_convergence_bench_variant_builds(name: str, overrides: list[str], tmp_path) -> None:
    experiment = [o for o in overrides if o.startswith("experiment=")] or ["experiment=shapes"]
    rest = [o for o in overrides if not o.startswith("experiment=")]
    cfg = compose_job([*experiment, *rest], tmp_path)
    lit = _model_on_meta(cfg)
    assert lit.net.num_queries == cfg.model.net.num_queries


def test_tower_dilation_reaches_the_proposal_heads_convolutions(tmp_path) -> None:
    key = "model.net.queries.head.tower_dilation"
    for value, expected in (("3", [3, 3]), ("[1,3]", [1, 3])):
        lit = _model_on_meta(compose_job(["experiment=shapes", f"{key}={value}"], tmp_path))
        convs = [m for m in lit.net.queries.head.tower if isinstance(m, torch.nn.Conv2d)]
        assert [c.dilation for c in convs] == [(d, d) for d in expected]
        assert [c.padding for c in convs] == [(d, d) for d in expected]
        assert lit.net.queries.head.class_conv.dilation == (1, 1)


def test_shapes_preset_reads_no_spatial_encoding_and_refuses_a_posenc_row(tmp_path) -> None:
    from types import SimpleNamespace

    from detr_lightning.utils.build import build_model

    # The deformable cross-attention samples the memory around each query's box without keys,
    # and the preset has no encoder layer: the spatial encoding is neither read nor computed.
    cfg = compose_job(["experiment=shapes"], tmp_path)
    assert cfg.model.net.transformer.decoder_pos == "none"
    meta = SimpleNamespace(num_classes=5, label_to_category_id=list(range(5)))
    net = build_model(cfg, meta).net.eval()
    calls = []
    net.position_encoding.register_forward_hook(lambda *args: calls.append(1))
    pixels, mask = torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        net(pixels, mask)
    assert calls == []
    one_layer = ["experiment=shapes", "model.net.transformer.num_encoder_layers=1"]
    net = build_model(compose_job(one_layer, tmp_path), meta).net.eval()
    net.position_encoding.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        net(pixels, mask)
    assert calls == [1]  # an encoder layer reads it
    # A Table 3 row would put it on keys nothing reads: refused, naming the keys.
    with pytest.raises(Exception, match=r"decoder_pos=attn .*would have no effect"):
        build_model(compose_job(["experiment=shapes", "posenc=baseline"], tmp_path), meta)
