"""benchmarks/bench_gpu.py, the prepared device check, runs on a CPU here so that it works the
day a GPU is lent: its step and inference modes, its log reading and its command lines."""

import importlib.util
import json
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[2]


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_runs_its_modes_on_cpu(tmp_path):
    bench = _bench_gpu()
    argv = ["--device", "cpu", "--backbone", "resnet18", "--batch", "2", "--size", "64", "96",
            "--steps", "1", "--queries", "10", "--layers", "1", "--modes", "fp32,bf16-mixed",
            "--out", str(tmp_path)]  # fmt: skip
    start = time.perf_counter()
    assert bench.main(argv) == 0
    wall_ms = 1000 * (time.perf_counter() - start)
    results = json.loads((tmp_path / "gpu.json").read_text())
    for kind in ("train", "inference"):
        assert set(results[kind]) == {"fp32", "bf16-mixed"}
        for figures in results[kind].values():
            assert figures["finite"] is True
            # a real timing: positive, within the call's wall time (which holds every mode's
            # warm-up and timed steps); images per second describe the same timing
            assert 0 < figures["ms"] < wall_ms
            assert figures["images_per_s"] * figures["ms"] == pytest.approx(2000)
            assert figures["peak_gib"] is None  # CUDA's allocator only
    table = (tmp_path / "gpu.md").read_text().splitlines()
    assert len(table) == 2 + 4  # header, rule, 2 modes x (train, inference)


def test_bench_gpu_reads_losses_graphs_and_ap_from_a_run(tmp_path):
    bench = _bench_gpu()
    log = tmp_path / "csv" / "metrics.csv"
    log.parent.mkdir()
    log.write_text(
        "epoch,step,train/loss,compile/graphs,compile/recompiles_epoch\n"
        "0,0,5.5,,\n0,1,4.0,,\n0,1,,2,2\n"
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"AP": 0.125}))
    figures = bench.e2e_figures(tmp_path)
    assert figures == {"train_losses_logged": 2, "losses_finite": True, "graphs": 2.0,
                       "recompiles_per_epoch": [2.0], "test_AP": 0.125}  # fmt: skip
    log.write_text("epoch,step,train/loss\n0,0,5.5\n0,1,nan\n")
    assert bench.e2e_figures(tmp_path)["losses_finite"] is False


def test_bench_gpu_command_lines_compose(tmp_path):
    """Every override of the end-to-end runs exists in the config tree (a typo would cost the
    lent GPU's minutes), DDP only with two GPUs."""
    bench = _bench_gpu()
    assert list(bench.e2e_commands(tmp_path, gpus=1)) == ["bf16-mixed + compile, 1 GPU"]
    runs = bench.e2e_commands(tmp_path, gpus=2)
    assert list(runs) == ["bf16-mixed + compile, 1 GPU", "DDP, 2 GPUs"]
    configs = {}
    for name, command in runs.items():
        overrides = command[command.index("detr_lightning.train") + 1 :]
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = configs[name] = compose("train", overrides=overrides)
        assert cfg.trainer.precision == "bf16-mixed" and cfg.model.compile is True
        assert cfg.model.net.backbone.name == "resnet50"
        assert cfg.model.net.backbone.pretrained is False
        assert cfg.trainer.max_steps == 100 and cfg.trainer.accelerator == "gpu"
    single, ddp = configs.values()
    assert single.trainer.devices == 1 and "strategy" not in single.trainer
    assert ddp.trainer.devices == 2 and ddp.trainer.strategy._target_.endswith("DDPStrategy")


def test_bench_gpu_profile_alone_writes_the_table(tmp_path) -> None:
    bench = _bench_gpu()
    argv = ["--device", "cpu", "--backbone", "resnet18", "--batch", "1", "--size", "64", "64",
            "--queries", "10", "--layers", "1", "--modes", "", "--profile", "fp32", "--out", str(tmp_path)]  # fmt: skip
    assert bench.main(argv) == 0
    text = (tmp_path / "profile.txt").read_text()
    assert text.count("aten::") >= 10 and "Self CPU time total" in text  # 15 ops by CPU time
    assert json.loads((tmp_path / "gpu.json").read_text())["train"] == {}


def _compile_check():
    spec = importlib.util.spec_from_file_location(
        "compile_check", REPO / "benchmarks" / "compile_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compile_check_reports_agreement_and_names_non_finite_gradients(monkeypatch, capsys):
    """The harness on the CPU without inductor (minutes): with ``compile`` a no-op the two
    copies agree exactly; a copy whose class head yields NaN gradients fails, named."""
    import torch

    check = _compile_check()
    argv = ["--device", "cpu", "--precision", "fp32", "--sizes", "64x64", "--batch", "1"]
    # the r50 preset's structure on a small scale (the harness, not the size, is checked here)
    for tiny in ("backbone=r18", "model.net.transformer.d_model=32",
                 "model.net.transformer.dim_feedforward=64",
                 "model.net.transformer.num_encoder_layers=1",
                 "model.net.transformer.num_decoder_layers=2"):  # fmt: skip
        argv += ["--override", tiny]
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: None)
    assert check.main(argv) == 0
    assert "relative grad difference 0 overall" in capsys.readouterr().out

    def poisoned(self, **kwargs):
        self.class_embed.weight.register_hook(lambda g: g * float("nan"))

    monkeypatch.setattr(torch.nn.Module, "compile", poisoned)
    assert check.main(argv) == 1
    out = capsys.readouterr().out
    assert "grads finite eager True compiled False" in out
    assert "non-finite in compiled: ['class_embed.weight']" in out
