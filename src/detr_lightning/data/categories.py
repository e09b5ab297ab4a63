"""Category id -> contiguous label mapping.

Rule (the same for every split, decided once from the training annotation file):

* COCO id space (``coco_id_space=True``, or ``None`` and the file's categories are exactly the
  80 COCO 2017 detection categories with their standard ids and names): ``label ==
  category_id`` and ``num_classes = max(91, max id + 1)``, the official DETR layout, so official
  checkpoints keep their class head. Unused slots (0, 12, 26, ...) are never a target.
* COCO panoptic id space (``coco_id_space=True`` on categories with stuff, ``isthing: 0``, or
  ``None`` and the things are exactly COCO's 80 beside stuff of ids below 250, as COCO panoptic
  2017's 133 categories): ``label == category_id`` and ``num_classes = max(250, max id + 1)``,
  the official panoptic model's 250 classes, so its release file keeps its class head too.
* Otherwise (``coco_id_space=False``, or ``None`` and anything else): the sorted category ids
  are remapped to ``0..K-1`` and ``num_classes = K``.

Either way ``label_to_category_id[label]`` gives the original category id back, and a dataset
built with an explicit ``label_to_category_id`` list uses it as is (validation/test splits and
checkpoints reuse the training mapping).
"""

from collections.abc import Sequence
from pathlib import Path

from detr_lightning.data.errors import DatasetFormatError

COCO_CATEGORY_NAMES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}  # fmt: skip
# COCO panoptic 2017's 53 stuff categories (isthing 0; its things are the 80 above), as
# panopticapi's panoptic_coco_categories.json lists them.
COCO_PANOPTIC_STUFF_NAMES: dict[int, str] = {
    92: "banner", 93: "blanket", 95: "bridge", 100: "cardboard", 107: "counter", 109: "curtain",
    112: "door-stuff", 118: "floor-wood", 119: "flower", 122: "fruit", 125: "gravel",
    128: "house", 130: "light", 133: "mirror-stuff", 138: "net", 141: "pillow", 144: "platform",
    145: "playingfield", 147: "railroad", 148: "river", 149: "road", 151: "roof", 154: "sand",
    155: "sea", 156: "shelf", 159: "snow", 161: "stairs", 166: "tent", 168: "towel",
    171: "wall-brick", 175: "wall-stone", 176: "wall-tile", 177: "wall-wood",
    178: "water-other", 180: "window-blind", 181: "window-other", 184: "tree-merged",
    185: "fence-merged", 186: "ceiling-merged", 187: "sky-other-merged", 188: "cabinet-merged",
    189: "table-merged", 190: "floor-other-merged", 191: "pavement-merged",
    192: "mountain-merged", 193: "grass-merged", 194: "dirt-merged", 195: "paper-merged",
    196: "food-other-merged", 197: "building-other-merged", 198: "rock-merged",
    199: "wall-other-merged", 200: "rug-merged",
}  # fmt: skip
COCO_NUM_CLASSES = 91
COCO_PANOPTIC_NUM_CLASSES = 250  # the official panoptic DETR's class count (largest id: 200)


def coco_categories(panoptic: bool) -> list[dict]:
    """COCO 2017's categories (``id``, ``name``, ``isthing``): the 80 detection ones, and with
    ``panoptic`` the 53 stuff ones too (133, COCO panoptic's)."""
    things = [{"id": i, "name": n, "isthing": 1} for i, n in COCO_CATEGORY_NAMES.items()]
    stuff = [{"id": i, "name": n, "isthing": 0} for i, n in COCO_PANOPTIC_STUFF_NAMES.items()]
    return things + stuff if panoptic else things


def is_coco_categories(categories: Sequence[dict]) -> bool:
    """True when ``categories`` are exactly the 80 COCO categories (ids and names)."""
    found = {int(c["id"]): str(c["name"]).strip().lower() for c in categories}
    return found == COCO_CATEGORY_NAMES


def _has_stuff(categories: Sequence[dict]) -> bool:
    return any(int(c.get("isthing", 1)) == 0 for c in categories)


def is_coco_panoptic_categories(categories: Sequence[dict]) -> bool:
    """True when the things of ``categories`` are exactly the 80 COCO categories and the rest
    are stuff with ids below 250 (COCO panoptic 2017: 80 things, 53 stuff, ids up to 200)."""
    things = [c for c in categories if int(c.get("isthing", 1)) == 1]
    ids = [int(c["id"]) for c in categories]
    return (
        _has_stuff(categories)
        and is_coco_categories(things)
        and max(ids) < COCO_PANOPTIC_NUM_CLASSES
    )


def label_map_from_categories(
    categories: Sequence[dict], coco_id_space: bool | None = None
) -> list[int]:
    """Return ``label_to_category_id`` for a json's ``categories`` list (see module docstring)."""
    ids = sorted(int(c["id"]) for c in categories)
    if coco_id_space is None:
        coco_id_space = is_coco_categories(categories) or is_coco_panoptic_categories(categories)
    if coco_id_space:
        if ids and ids[0] < 0:
            raise ValueError(f"coco_id_space=True needs non-negative category ids, got {ids[0]}")
        slots = COCO_PANOPTIC_NUM_CLASSES if _has_stuff(categories) else COCO_NUM_CLASSES
        return list(range(max([slots, *(i + 1 for i in ids)])))
    return ids


def differing_names(
    categories: Sequence[dict], reference: Sequence[dict]
) -> list[tuple[int, str, str]]:
    """(id, name in ``categories``, name in ``reference``) of each id that both lists hold
    under different names (surrounding spaces ignored), sorted by id. Ids alone tie a label to
    a class: the same id named otherwise in another split (or a checkpoint) means the same
    label is trained and scored as different classes."""
    ref = {int(c["id"]): str(c["name"]) for c in reference}
    found = {int(c["id"]): str(c["name"]) for c in categories}
    return [
        (i, found[i], ref[i])
        for i in sorted(found.keys() & ref.keys())
        if found[i].strip() != ref[i].strip()
    ]


def describe_name_differences(diffs: Sequence[tuple[int, str, str]], a: str, b: str) -> str:
    """``diffs`` of :func:`differing_names` as "id 1: 'disc' in A, 'square' in B; ..."."""
    return "; ".join(f"id {i}: {x!r} in {a}, {y!r} in {b}" for i, x, y in diffs)


def check_same_names(
    categories: Sequence[dict], ann: str | Path, reference: Sequence[dict], ref_ann: str | Path
) -> None:
    """Refuse a split (json ``ann``) that names a category id otherwise than the training json
    ``ref_ann``: labels follow the ids alone, so that split would be trained or scored against
    the wrong classes without a sign (e.g. 1=disc, 2=square beside 1=square, 2=disc)."""
    diffs = differing_names(categories, reference)
    if diffs:
        raise DatasetFormatError(
            f"{ann} names {len(diffs)} category id(s) otherwise than the training json "
            f"{ref_ann}: {describe_name_differences(diffs, str(ann), str(ref_ann))}. Labels "
            f"follow the ids, so these classes would be trained or scored as the wrong ones. "
            f"Fix: use one categories list (the same ids and names) in every split's json."
        )


def thing_labels(
    categories: Sequence[dict], label_to_category_id: Sequence[int]
) -> dict[int, bool]:
    """label -> ``isthing`` of its category, for the labels whose category is in
    ``categories`` (True also for categories without an ``isthing`` field, i.e. detection
    data); labels of no category (COCO's unused slots) are left out."""
    things = {int(c["id"]): bool(c.get("isthing", 1)) for c in categories}
    return {
        label: things[int(c)] for label, c in enumerate(label_to_category_id) if int(c) in things
    }


def is_thing_per_label(
    categories: Sequence[dict], label_to_category_id: Sequence[int]
) -> list[bool]:
    """``isthing`` of each label's category: True for things (and for categories without an
    ``isthing`` field, i.e. detection data), False for panoptic stuff and unused COCO slots."""
    known = thing_labels(categories, label_to_category_id)
    return [known.get(label, False) for label in range(len(label_to_category_id))]
