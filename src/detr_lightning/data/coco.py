"""COCO-format detection dataset (real COCO, custom COCO-format data and the shapes dataset).

``CocoDetectionDataset(img_folder, ann_file, ...)[i]`` returns ``(image, target)``: ``image`` a
float ``[3, H, W]`` ImageNet-normalised tensor after the transforms, and ``target`` with

* ``labels`` int64 [T], contiguous labels (see :mod:`detr_lightning.data.categories` for the
  rule: COCO keeps its 91-slot id space, other datasets are remapped to ``0..K-1``);
* ``boxes`` float32 [T, 4] normalised cxcywh relative to the transformed, unpadded image;
* ``image_id`` int64 scalar; ``orig_size`` / ``size`` int64 [2] (h, w) of the decoded image
  file and of the transformed image;
* ``iscrowd`` int64 [T]; ``area`` float32 [T], the json's ``area`` in original pixels.

Conversions, all counted and logged once as a warning when they happen: json ``[x, y, w, h]``
becomes xyxy, clipped to the image's json ``width``/``height``; boxes with no area left after
clipping are dropped. ``train=True`` drops ``iscrowd`` objects (as DETR does), ``train=False``
keeps them for evaluation and adds the json's unaltered boxes as ``gt_boxes``, ``gt_labels``,
``gt_iscrowd``, ``gt_area``: the box metric's ground truth, as pycocotools reads the json.
Images without annotations are kept as negatives unless ``keep_empty=False``. Images are
converted to RGB and EXIF orientation is applied.
"""

import logging
from pathlib import Path

import torch
from torch import Tensor
from torchvision import tv_tensors

from detr_lightning.data.coco_json import SHOWN_IDS, build_index, read_coco_json
from detr_lightning.data.errors import DatasetFormatError
from detr_lightning.data.indexed_images import IndexedImageDataset, Transform, check_files_exist
from detr_lightning.data.transforms import make_base_transforms

log = logging.getLogger(__name__)


def _shown(ids: list[int], count: int) -> str:
    """The first ids of ``count`` as "3, 4" or "3, 4, ..." when there are more."""
    return ", ".join(map(str, ids)) + (", ..." if count > SHOWN_IDS else "")


class CocoDetectionDataset(IndexedImageDataset):
    """Detection dataset over an image folder and a COCO instances json (see module doc).

    Args:
        img_folder: directory the json's ``file_name`` entries are relative to.
        ann_file: COCO instances json.
        transforms: callable ``(image, target) -> (image, target)`` as built by
            :mod:`detr_lightning.data.transforms`; default: tensor conversion + normalisation.
        train: drop crowd objects (training) or keep them (evaluation).
        label_to_category_id: explicit mapping to use (e.g. the training split's, or one from a
            checkpoint); default: derived from this file's categories.
        coco_id_space: force (True) or forbid (False) COCO's 91-slot id space; None = detect.
        keep_empty: keep images without (usable) annotations as negatives.
        exif_transpose: apply the EXIF orientation tag when decoding.
    """

    def __init__(
        self,
        img_folder: str | Path,
        ann_file: str | Path,
        transforms: Transform | None = None,
        train: bool = False,
        label_to_category_id: list[int] | None = None,
        coco_id_space: bool | None = None,
        keep_empty: bool = True,
        exif_transpose: bool = True,
    ) -> None:
        self.img_folder, self.ann_file = Path(img_folder), Path(ann_file)
        data = read_coco_json(self.ann_file)
        if not self.img_folder.is_dir():
            raise FileNotFoundError(
                f"Image folder not found: {self.img_folder} (images of {self.ann_file}). Fix: "
                f"check the data config's image path, or generate the shapes dataset with "
                f"`make data`."
            )
        self._set_categories(data["categories"], label_to_category_id, coco_id_space)
        self.train, self.exif_transpose = train, exif_transpose
        self.transforms = transforms if transforms is not None else make_base_transforms()
        self._index = build_index(data, self.ann_file, self.label_to_category_id, train, keep_empty)
        self.stats = self._index.stats
        if len(self._index.file_names) == 0:
            why = "no images" if not data["images"] else "no image with usable annotations"
            raise DatasetFormatError(
                f"{self.ann_file}: the dataset is empty ({why}; {len(data['images'])} image "
                f"records, keep_empty={keep_empty}). Fix: point the config at a non-empty split"
                + ("" if keep_empty else " or set keep_empty=True")
                + "."
            )
        check_files_exist(self.img_folder, self._index.file_names, self.ann_file, "image files")
        self._log_stats()

    def _log_stats(self) -> None:
        """Warn once about clipped and area-less boxes, worded by split: training clips or
        drops them from its targets; evaluation scores them as the json has them (only the
        validation loss's targets are clipped), so there they are reported, not dropped."""
        s, ix, parts = self.stats, self._index, []
        if s["clipped"]:
            ids = f"annotation ids {_shown(ix.clipped_ids, s['clipped'])}"
            parts.append(
                f"{s['clipped']} boxes reaching outside their image were clipped to it in the "
                f"training targets ({ids})" if self.train else
                f"{s['clipped']} boxes reaching outside their image ({ids}) are scored as the "
                f"json has them (only the validation loss's targets are clipped)"
            )  # fmt: skip
            # A few boxes a few pixels over is annotation noise; most of them, a format mix-up.
            if s["far_outside"] >= 2 and 3 * s["far_outside"] > s["boxes"]:
                parts.append(
                    f"{s['far_outside']} of {s['boxes']} boxes reach more than a pixel outside "
                    f"their image: if the file's boxes are [x1, y1, x2, y2], convert them to "
                    f"COCO's [x, y, width, height]"
                )
        if s["degenerate"]:
            ids = f"annotation ids {_shown(ix.degenerate_ids, s['degenerate'])}"
            what = (f"{s['degenerate']} boxes with no area inside their image (zero width or "
                    "height, or entirely outside it)")  # fmt: skip
            parts.append(
                f"{what} were dropped from the training targets ({ids}; fix or remove them)"
                if self.train else
                f"{what} are scored as the json has them: no prediction can match them, so each "
                f"counts as a missed object ({ids}; fix or remove them)"
            )  # fmt: skip
        if parts:
            log.warning("%s: %s.", self.ann_file, "; ".join(parts))
        if s["crowd_dropped"]:  # DETR never trains on crowd boxes
            log.info("%s: dropped %d crowd annotations (training split).", self.ann_file,
                     s["crowd_dropped"])  # fmt: skip
        if s["empty_dropped"]:
            log.info("%s: dropped %d images without annotations (keep_empty=False).",
                     self.ann_file, s["empty_dropped"])  # fmt: skip

    @property
    def num_degenerate_boxes(self) -> int:
        return self.stats["degenerate"]

    @property
    def num_clipped_boxes(self) -> int:
        return self.stats["clipped"]

    def raw_target(self, idx: int) -> dict[str, Tensor]:
        """Target before transforms: ``boxes`` absolute xyxy (clipped) in original pixels."""
        ix = self._index
        lo, hi = int(ix.offsets[idx]), int(ix.offsets[idx + 1])
        height, width = (int(v) for v in ix.sizes[idx])
        return {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(ix.boxes[lo:hi]), format="XYXY", canvas_size=(height, width)
            ),
            "labels": torch.from_numpy(ix.labels[lo:hi]),
            "iscrowd": torch.from_numpy(ix.iscrowd[lo:hi]),
            "area": torch.from_numpy(ix.area[lo:hi]),
        }

    def evaluation_ground_truth(self, idx: int) -> dict[str, Tensor]:
        """Evaluation splits: ``gt_boxes`` [G, 4] absolute xyxy in original pixels as the json
        has them (unclipped, boxes without area included), ``gt_labels``, ``gt_iscrowd``,
        ``gt_area`` [G]: pycocotools' ground truth for the same json. Training: none."""
        gt = self._index.ground_truth
        if gt is None:
            return {}
        lo, hi = int(gt["offsets"][idx]), int(gt["offsets"][idx + 1])
        return {
            f"gt_{k}": torch.from_numpy(gt[k][lo:hi])
            for k in ("boxes", "labels", "iscrowd", "area")
        }
