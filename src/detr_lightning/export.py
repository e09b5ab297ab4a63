"""Export: ``python -m detr_lightning.export ckpt_path=PATH format=onnx`` (``make export
CKPT=...``), or ``experiment=r50 model.pretrained=<official .pth> format=onnx``.

Writes ``output`` (default ``<run dir>/model.onnx``): the detector's inference graph with inputs
``pixel_values`` [B, 3, H, W] float32 (ImageNet-normalised, zero-padded) and ``pixel_mask``
[B, H, W] bool (True = real pixel), outputs ``pred_logits`` [B, Q, K] and ``pred_boxes``
[B, Q, 4] (normalised cxcywh relative to each unpadded image), and for a panoptic model
(``head=panoptic``) ``pred_masks`` [B, Q, H/4, W/4] (mask logits); B, H and W are dynamic. The
label map, class names and the class scoring (``class_scoring``, its class path, and ``focal``:
a sigmoid head) go into the model's metadata, a panoptic model's ``is_thing_map`` (label ->
isthing) and ``panoptic_postprocess`` (``model.panoptic.postprocess``) too, so that
``predict backend=onnxruntime onnx=...`` needs no checkpoint. Then ONNX Runtime runs random
images of ``verify_sizes`` next to PyTorch and the max abs difference is printed; above
``atol + rtol x`` an output's largest |value| the export fails and ``output`` is left as it
was (:func:`staged_output`).

Not exported (see :mod:`detr_lightning.inference.onnx_export`): the matcher and losses
(training only), the auxiliary decoder outputs, and the post-processing, including the panoptic
merge, which stays in Python.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from detr_lightning.errors import ExplainedError
from detr_lightning.utils import absolute_path, claim_run_dirs_for_jobs_only, conf_dir
from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.job_errors import exit_on_explained_errors
from detr_lightning.utils.null_group_choice import refuse_null_group_choices

log = logging.getLogger(__name__)


class ExportCheckError(ExplainedError, RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the configured tolerance."""


def export(cfg: DictConfig) -> tuple[str, dict[str, float]]:
    """Export (and verify); returns the file and the measured differences ({} without verify)."""
    if cfg.get("format", "onnx") != "onnx":
        raise ConfigError(f"format={cfg.format}: only format=onnx is supported")
    from detr_lightning.inference.loading import check_inference_config

    check_inference_config(cfg, needs_data=False)
    from detr_lightning.data.eval_transform_record import KEY, transform_record
    from detr_lightning.detr.class_scoring import scoring_of
    from detr_lightning.detr.segmentation import DETRsegm
    from detr_lightning.inference.loading import load_detector
    from detr_lightning.inference.onnx_export import (
        compared_outputs,
        export_onnx,
        unfaithful_outputs,
        verify_onnx,
    )
    from detr_lightning.inference.panoptic_output import thing_map

    detector = load_detector(cfg, device="cpu")
    net = detector.model.net
    scoring = scoring_of(net)
    metadata = {
        "label_to_category_id": detector.category_ids,
        "category_names": detector.names,
        "focal": not scoring.no_object,  # read by exports of earlier versions
        "class_scoring": f"{type(scoring).__module__}.{type(scoring).__qualname__}",
        "num_queries": int(net.num_queries),
        "weights": absolute_path(detector.source),
        # predict backend=onnxruntime warns when it resizes otherwise (as for checkpoints)
        KEY: transform_record(cfg.get("data")),
    }
    if isinstance(net, DETRsegm):  # what predict's panoptic output needs besides the graph
        metadata["is_thing_map"] = thing_map(detector.category_ids, detector.categories)
        settings = OmegaConf.select(cfg, "model.panoptic.postprocess")
        if settings is not None:
            metadata["panoptic_postprocess"] = OmegaConf.to_container(settings, resolve=True)
    size = tuple(int(v) for v in cfg.get("example_size", (256, 320)))
    diffs: dict[str, float] = {}
    with staged_output(cfg.output) as staged:
        export_onnx(net, staged, size, int(cfg.opset), str(cfg.exporter), metadata)
        if cfg.get("verify", True):
            sizes = [tuple(int(v) for v in s) for s in cfg.verify_sizes]
            diffs = verify_onnx(net, staged, sizes)
            outputs = compared_outputs(diffs)
            shown = ", ".join(f"{k} {diffs[k]:.2e}" for k in outputs)
            scales = ", ".join(f"{k} {diffs[k + '.scale']:.3g}" for k in outputs)
            print(f"ONNX Runtime vs PyTorch, max abs difference over {sizes}: {shown}")
            print(f"PyTorch outputs, max |value|: {scales}")
            failed = unfaithful_outputs(diffs, float(cfg.atol), float(cfg.get("rtol", 0.0)))
            if failed:
                raise ExportCheckError(
                    f"output={cfg.output}: ONNX Runtime differs from PyTorch by more than atol + "
                    f"rtol x the output's max |value|: {'; '.join(failed)}; the export is not "
                    "faithful, so it was not written (a file there before is kept). Fix: try "
                    "exporter=torchscript (verify=false writes it unchecked)."
                )
    print(f"onnx: {cfg.output}")
    print(f"run directory: {cfg.paths.output_dir}")
    return str(cfg.output), diffs


@contextlib.contextmanager
def staged_output(output: str) -> Iterator[Path]:
    """A path of ``output``'s name in a fresh folder beside it; the files written there (the
    .onnx and any external-data file beside it) replace ``output``'s only when the block ends
    without an error, so an export that fails, fails its check or is interrupted leaves no
    partial or unchecked model at ``output`` and keeps the one there before."""
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging / target.name
        # the .onnx last: a reader never finds it without its external data
        for file in sorted(staging.iterdir(), key=lambda f: f.name == target.name):
            os.replace(file, target.parent / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@refuse_null_group_choices(conf_dir())
@claim_run_dirs_for_jobs_only
@hydra.main(config_path=conf_dir(), config_name="export", version_base="1.3")
@exit_on_explained_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point: refuses training-only overrides first (they would be ignored)."""
    from detr_lightning.utils.unread_overrides import refuse_unread_overrides

    refuse_unread_overrides("export")
    export(cfg)


if __name__ == "__main__":
    main()
