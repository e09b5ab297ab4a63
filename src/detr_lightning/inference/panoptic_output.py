"""``predict``'s panoptic output: per image a segment-id PNG and its ``segments_info``, together
in COCO's panoptic format, so that ``panopticapi.evaluation.pq_compute(gt_json,
"panoptic.json", gt_folder, "panoptic")`` (or :func:`~detr_lightning.evaluation.panoptic.pq_compute`)
scores a prediction run, and a COCO test-dev submission is the folder and json as written.

* ``panoptic/<image>.png``: RGB ids (id = R + 256 G + 256^2 B, 0 = VOID) at the image's original
  size, named as ``drawn/`` names its PNGs;
* ``panoptic.json``: ``{"annotations": [{"image_id", "file_name" (relative to panoptic/),
  "segments_info": [{"id", "category_id" (the dataset's), "isthing", "area"}]}], "categories"}``.

Segments are :class:`~detr_lightning.detr.panoptic_postprocess.PostProcessPanoptic`'s with the
evaluation's settings (``model.panoptic.postprocess``: threshold, min_area), the same the
validation PQ uses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from detr_lightning.data.categories import thing_labels
from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.detr.panoptic_postprocess import PostProcessPanoptic, id_map_to_png
from detr_lightning.utils.config_records import differing_keys, shown

# Official DETR's rule (hubconf ``is_thing_map``): ids up to 90 are things, the rest stuff; for
# a model whose categories nothing records (a COCO release gets COCO panoptic's own).
COCO_LAST_THING_ID = 90
log = logging.getLogger(__name__)


def thing_map(category_ids: Sequence[int], categories: Sequence[dict] | None) -> dict[int, bool]:
    """label -> isthing for every label whose category is known: from ``categories`` (each
    with ``isthing``; labels of no category, e.g. COCO's unused slots, are left out and form no
    segment); without them (a release of another class count), the official rule (<= 90:
    thing) for every label."""
    if categories is None:
        return {label: int(c) <= COCO_LAST_THING_ID for label, c in enumerate(category_ids)}
    return thing_labels(categories, category_ids)


class PanopticWriter:
    """Collects one prediction run's panoptic segmentations and writes them (module docstring).

    Args:
        folder: where the PNGs go (``<run dir>/panoptic``).
        postprocess: its thing map (:func:`thing_map`) and the model's scoring filled in.
        category_ids: label -> the dataset's category id.
        names: label -> class name (None: the ids stand for names).
    """

    def __init__(
        self,
        folder: str | Path,
        postprocess: PostProcessPanoptic,
        category_ids: Sequence[int],
        names: Sequence[str] | None = None,
    ) -> None:
        self.folder, self.postprocess = Path(folder), postprocess
        self.category_ids = [int(c) for c in category_ids]
        self.names = names
        self.annotations: list[dict[str, Any]] = []

    def add(
        self,
        outputs: dict[str, Any],
        processed_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
        canvas_size: Sequence[int],
        image_ids: Sequence[int],
        png_names: Sequence[str],
    ) -> None:
        """One batch: outputs with ``pred_logits`` [B, Q, K] and ``pred_masks`` [B, Q, h, w] on
        the padded canvas (H, W) = ``canvas_size``; per image its (h, w) as fed to the model,
        its original (H_i, W_i), its id and its PNG's path relative to ``folder``."""
        results = self.postprocess(outputs, processed_sizes, original_sizes, canvas_size)
        for result, image_id, name in zip(results, image_ids, png_names, strict=True):
            path = self.folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(id_map_to_png(result["segment_map"]))
            segments = [
                dict(s, category_id=self.category_ids[s["category_id"]])
                for s in result["segments_info"]
            ]
            self.annotations.append(
                {"image_id": int(image_id), "file_name": name, "segments_info": segments}
            )

    def write_json(self, path: str | Path) -> Path:
        """``panoptic.json``: the collected annotations and the categories a segment can have
        (``id``, ``name``, ``isthing``)."""
        categories = [
            {"id": self.category_ids[label], "isthing": int(thing),
             "name": (self.names[label] if self.names else "") or str(self.category_ids[label])}
            for label, thing in sorted(self.postprocess.is_thing_map.items())
        ]  # fmt: skip
        from detr_lightning.checkpointing.atomic_io import atomic_write_text

        path = Path(path)  # whole or none, as predictions.json
        atomic_write_text(path, json.dumps({"annotations": self.annotations,
                                            "categories": categories}))  # fmt: skip
        return path


def panoptic_writer(
    settings: Any,
    is_thing_map: Mapping[int, bool],
    category_ids: Sequence[int],
    names: Sequence[str] | None,
    scoring: SoftmaxScoring,
    folder: str | Path,
) -> PanopticWriter:
    """The writer of a model with DETR's mask head (``head=panoptic``).

    Args:
        settings: the ``model.panoptic.postprocess`` node (``_target_``, threshold, min_area;
            None: :class:`PostProcessPanoptic`'s defaults).
        is_thing_map: label -> isthing (:func:`thing_map`).
        category_ids, names: label -> category id / class name.
        scoring: the model's class scoring.
        folder: where the PNGs go.
    """
    from hydra.utils import instantiate

    make = instantiate(settings) if settings is not None else PostProcessPanoptic
    postprocess = make(is_thing_map=is_thing_map, scoring=scoring)
    return PanopticWriter(folder, postprocess, category_ids, names)


def exported_panoptic_settings(run: Any, recorded: dict[str, Any] | None, source: str) -> Any:
    """The panoptic post-processing settings for an exported model: this run's
    ``model.panoptic.postprocess`` when it composes one (``head=panoptic``; a warning names both
    when it differs from the export's), else those recorded at export (None: the defaults)."""
    if run is None:
        return recorded
    current = OmegaConf.to_container(run, resolve=True)
    if recorded is not None and current != recorded:
        changed = differing_keys(recorded, current)
        log.warning(
            "%s records model.panoptic.postprocess %s (its export's); this run uses %s: the "
            "segments differ from that model's evaluation. Fix: give the training run's "
            "model.panoptic.postprocess overrides, unless these are what you want.",
            source, shown(recorded, changed), shown(current, changed),
        )  # fmt: skip
    return run
