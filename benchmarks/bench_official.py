"""Our DETR-R50 against the official facebookresearch/detr code, same weights, one process.

Needs a local checkout of the official repository (never vendored, never downloaded here):
``OFFICIAL_DETR=/path/to/detr make bench`` or ``python benchmarks/bench_official.py --official
PATH``; without one it prints how to get one and exits 0. The official model is built by its own
``models.build_model`` (default ``main.py`` arguments, CPU, no ImageNet download), ours gets its
weights through :func:`~detr_lightning.detr.official.convert_official_state_dict`.

Training step (batch ``--batch`` at ``--size``², random targets, aux losses): forward, set
loss, backward, clip at 0.1, AdamW with the two learning rates: the official loop as in its
``engine.py`` (``torch.optim.AdamW`` defaults) and ours as ``LitDETR`` runs it (the optimizer of
conf/model/detr.yaml), in float32 and under ``trainer.precision=bf16-mixed``. Inference: one image, eval mode, no gradients: the official model,
ours as validation runs it, and ours as ``predict`` runs it
(:func:`~detr_lightning.inference.fast_graph.prepare_for_inference`: folded BatchNorms,
channels-last; also in bf16, and compiled with ``--compile``), and the exported ONNX graph as
``predict backend=onnxruntime`` runs it (skip with ``--no-onnx``). The variants run interleaved,
round after round, so that a busy machine slows all of them alike; the ratios (official time /
ours, > 1 = ours faster) come from the per-variant minimum and median of the same run.
``--ablate`` adds our training step with one lever off at a time: where the gain comes from.
``--parity`` times nothing and prints the max differences of outputs, losses and gradients
(:mod:`official_parity`).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.fx
from torch import nn

from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.frozen_bn import ConvFrozenBN, FrozenBNLeafTracer
from detr_lightning.detr.model import build_detr
from detr_lightning.detr.official import convert_official_state_dict
from detr_lightning.inference.fast_graph import prepare_for_inference
from detr_lightning.inference.onnx_runtime import OnnxDetector
from detr_lightning.utils.cpu_precision import cpu_computes_natively

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import _random_targets, our_train_step, param_groups  # noqa: E402


def is_official_checkout(path: str | None) -> bool:
    """Whether ``path`` (``--official`` or ``OFFICIAL_DETR``) holds facebookresearch/detr."""
    return bool(path) and (Path(path) / "models" / "detr.py").is_file()


def build_official(path: str, **overrides) -> tuple[nn.Module, nn.Module]:
    """The official DETR-R50 and its criterion, from its own builders, with ``main.py``'s
    default arguments (``overrides`` replace some, e.g. ``dropout=0.0``) on the CPU; its
    backbone would download ImageNet weights on the main process, so it is told it is not the
    main process (random init). The official post-processors are kept as
    ``model.official_postprocessors``."""
    sys.path.insert(0, path)
    import main as official_main
    import models.backbone as official_backbone
    from models import build_model

    official_backbone.is_main_process = lambda: False
    args = official_main.get_args_parser().parse_args([])
    args.device = "cpu"
    for key, value in overrides.items():
        setattr(args, key, value)
    model, criterion, postprocessors = build_model(args)
    model.official_postprocessors = postprocessors
    return model, criterion


def official_train_step(model, criterion, pixels, mask, targets) -> Callable[[], None]:
    from util.misc import NestedTensor

    samples = NestedTensor(pixels, ~mask)  # the official mask is True on padding
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-4, weight_decay=1e-4)

    def step() -> None:  # engine.train_one_epoch
        loss_dict = criterion(model(samples), targets)
        weights = criterion.weight_dict
        losses = sum(loss_dict[k] * weights[k] for k in loss_dict if k in weights)
        optimizer.zero_grad()
        losses.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()

    return step


def ours_like(official: nn.Module, **backbone_kwargs) -> nn.Module:
    """Our DETR-R50 (``backbone_kwargs`` override the Backbone's speed switches) with the
    official model's weights."""
    model = build_detr("resnet50")
    if backbone_kwargs:
        model.backbone = Backbone("resnet50", **backbone_kwargs)
    model.load_state_dict(convert_official_state_dict(official.state_dict()))
    return model


def with_torch_dropout(model: nn.Module) -> nn.Module:
    """``model`` with torch's ``nn.Dropout`` and ``nn.MultiheadAttention`` in place of the
    transformer's cheap-mask subclasses (same weights): the dropout lever off."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, name, nn.Dropout(child.p))
            elif isinstance(child, nn.MultiheadAttention):
                plain = nn.MultiheadAttention(
                    child.embed_dim, child.num_heads, child.dropout, batch_first=True
                )
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain.train(child.training))
    return model


def with_fx_trunk(model: nn.Module) -> nn.Module:
    """``model`` whose ResNet trunk runs as an FX graph of the same modules (what
    ``create_feature_extractor`` builds: residual additions out of place): the eager-trunk
    lever off."""
    body = model.backbone.body
    model.backbone.body = torch.fx.GraphModule(body, FrozenBNLeafTracer().trace(body))
    return model


def with_default_pointwise_routing(model: nn.Module) -> nn.Module:
    """``model`` whose fused convolutions all run as ``nn.Conv2d`` calls them (1x1 kernels
    without the dilation that routes them to oneDNN; matters with one thread): that lever off."""

    def plain_forward(conv: ConvFrozenBN, x: torch.Tensor) -> torch.Tensor:
        return conv._conv_forward(x, *conv.fused_weight_and_bias())

    for conv in (m for m in model.modules() if isinstance(m, ConvFrozenBN)):
        conv.forward = types.MethodType(plain_forward, conv)
    return model


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """One untimed call of each, then ``rounds`` rounds calling each once: per call, the wall
    seconds and the process CPU seconds (with one torch thread the CPU time is what the call
    computed, whatever else the machine runs; with more, it includes the threads' waits)."""
    for fn in fns.values():
        fn()
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def report(title: str, times: dict[str, dict[str, list[float]]], reference: str = "official"):
    """Print min / median wall seconds and median CPU seconds per variant, and the ratios
    official / variant of each (> 1: the variant is faster)."""
    stats = {n: {"min": min(t["wall"]), "median": statistics.median(t["wall"]),
                 "cpu": statistics.median(t["cpu"])} for n, t in times.items()}  # fmt: skip
    ref = stats[reference]
    print(f"[official] {title}: seconds (ratio official / this)")
    figures = {}
    for name, s in stats.items():
        ratios = {k: ref[k] / v for k, v in s.items()}
        figures[name] = {**{f"{k}_s": v for k, v in s.items()},
                         **{f"ratio_{k}": v for k, v in ratios.items()}}  # fmt: skip
        print(f"[official]   {name:34s} wall min {s['min']:6.3f} (x{ratios['min']:4.2f})  "
              f"median {s['median']:6.3f} (x{ratios['median']:4.2f})  "
              f"CPU {s['cpu']:6.3f} (x{ratios['cpu']:4.2f})")  # fmt: skip
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", default=os.environ.get("OFFICIAL_DETR"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ablate", action="store_true", help="one lever off at a time")
    parser.add_argument("--compile", action="store_true", help="also compiled (minutes)")
    parser.add_argument(
        "--no-onnx", action="store_true", help="skip predict backend=onnxruntime (1 min export)"
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds, no ablation")
    parser.add_argument("--only", choices=("train", "inference"), help="one half only")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice; "
                        "1 is steadier on a machine other jobs share)")  # fmt: skip
    parser.add_argument("--parity", action="store_true",
                        help="max differences of outputs, losses and gradients; no timing "
                        "(benchmarks/official_parity.py)")  # fmt: skip
    args = parser.parse_args()
    if not is_official_checkout(args.official):
        print("[official] skipped: set OFFICIAL_DETR to a checkout of facebookresearch/detr "
              "(e.g. git clone https://github.com/facebookresearch/detr /tmp/detr; "
              "OFFICIAL_DETR=/tmp/detr make bench)")  # fmt: skip
        return 0
    rounds = 3 if args.quick else args.rounds
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.parity:
        from official_parity import run_parity

        official, criterion = build_official(args.official, dropout=0.0)
        run_parity(official, criterion, official.official_postprocessors["bbox"])
        return 0
    official, official_criterion = build_official(args.official)
    size, batch = args.size, args.batch
    pixels = torch.randn(batch, 3, size, size)
    mask = torch.ones(batch, size, size, dtype=torch.bool)
    targets = _random_targets(batch)
    print(f"[official] R50, same weights, {torch.get_num_threads()} threads, {rounds} rounds; "
          f"training: batch {batch} at {size}x{size}; inference: 1 image")  # fmt: skip

    figures = {}
    if args.only != "inference":
        figures["train"] = time_training(args, official, official_criterion, pixels, mask, targets,
                                         rounds)  # fmt: skip
    if args.only != "train":
        figures["inference"] = time_inference(args, official, pixels[:1], mask[:1], rounds + 2)
    return 0


def native_bf16() -> bool:
    """Whether this CPU runs bf16 natively; without, the bf16 rows would take minutes a step and
    are left out (``utils/cpu_precision.py``)."""
    if cpu_computes_natively(torch.bfloat16):
        return True
    print(f"[official] bf16 rows skipped: this CPU ({torch.backends.cpu.get_cpu_capability()}) "
          "has no native bf16 kernels")  # fmt: skip
    return False


def time_training(args, official, official_criterion, pixels, mask, targets, rounds) -> dict:
    """Interleaved training steps: official, ours (and with ``--ablate`` one lever off each)."""
    train = {
        "official": official_train_step(
            official.train(), official_criterion, pixels, mask, targets
        ),  # fmt: skip
        "ours": our_train_step(ours_like(official).train(), pixels, mask, targets),
    }
    if native_bf16():
        train["ours, bf16-mixed"] = our_train_step(
            ours_like(official).train(), pixels, mask, targets, "bf16-mixed"
        )
    if args.compile:
        compiled = ours_like(official).train()
        compiled.compile()  # what model.compile=true does (LitDETR.configure_model)
        train["ours, model.compile=true"] = step = our_train_step(compiled, pixels, mask, targets)
        start = time.perf_counter()
        step()
        print(f"[official] model.compile=true: first training step (compiles) "
              f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    if args.ablate and not args.quick:
        train |= {
            "ours, BatchNorm not fused": our_train_step(
                ours_like(official, fuse_frozen_bn=False).train(), pixels, mask, targets),
            "ours, NCHW": our_train_step(
                ours_like(official, channels_last=False).train(), pixels, mask, targets),
            "ours, for-loop AdamW": our_train_step(
                ours_like(official).train(), pixels, mask, targets, fused=None),
            "ours, torch's dropout masks": our_train_step(
                with_torch_dropout(ours_like(official).train()), pixels, mask, targets),
            "ours, FX-traced trunk": our_train_step(
                with_fx_trunk(ours_like(official).train()), pixels, mask, targets),
            "ours, 1x1 convs routed by PyTorch": our_train_step(
                with_default_pointwise_routing(ours_like(official).train()), pixels, mask,
                targets),
        }  # fmt: skip
    return report("training step", interleaved(train, rounds))


def time_inference(args, official, image, image_mask, rounds) -> dict:
    """Interleaved single-image forwards: official, our validation and predict graphs."""
    official.eval()
    ours_eval = ours_like(official).eval()
    predict_fp32 = prepare_for_inference(copy.deepcopy(ours_eval))
    from util.misc import NestedTensor

    sample = NestedTensor(image, ~image_mask)
    infer = {
        "official": lambda: official(sample),
        "ours (validation graph)": lambda: ours_eval(image, image_mask),
        "ours (predict: folded BN, NHWC)": lambda: predict_fp32(image, image_mask),
    }
    if native_bf16():
        predict_bf16 = prepare_for_inference(copy.deepcopy(ours_eval), dtype=torch.bfloat16)
        infer["ours (predict, bf16)"] = lambda: predict_bf16(image, image_mask)
    if args.compile:
        compiled = prepare_for_inference(copy.deepcopy(ours_eval), compile=True)
        with torch.no_grad():
            start = time.perf_counter()
            compiled(image, image_mask)
            print(
                f"[official] torch.compile of the predict graph: {time.perf_counter() - start:.0f} s"
            )
        infer["ours (predict, compiled)"] = lambda: compiled(image, image_mask)
    if not args.no_onnx:
        onnx = onnx_detector(copy.deepcopy(ours_eval), tuple(image.shape[-2:]))
        infer["ours (predict backend=onnxruntime)"] = lambda: onnx(image, image_mask)
    with torch.no_grad():
        ref = official(sample)["pred_boxes"]
        for name, fn in list(infer.items())[1:]:
            print(f"[official]   {name}: max |boxes - official| "
                  f"{(fn()['pred_boxes'] - ref).abs().max().item():.1e}")  # fmt: skip
        return report("inference forward", interleaved(infer, rounds))


def onnx_detector(net: nn.Module, size: tuple[int, int]) -> OnnxDetector:
    """``net`` exported as ``python -m detr_lightning.export`` does (ONNX Runtime folds the
    BatchNorms itself) and run as ``predict backend=onnxruntime`` runs it."""
    from detr_lightning.inference.onnx_export import export_onnx

    path = Path(tempfile.mkdtemp()) / "detr_r50.onnx"
    start = time.perf_counter()
    export_onnx(net, path, example_size=size)
    print(f"[official] ONNX export: {time.perf_counter() - start:.0f} s")
    return OnnxDetector(path, providers=["CPUExecutionProvider"], threads=torch.get_num_threads())


if __name__ == "__main__":
    sys.exit(main())
