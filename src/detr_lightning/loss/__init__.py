"""The public loss API (``from detr_lightning.loss import HungarianMatcher, SetCriterion``);
the code lives in :mod:`detr_lightning.detr`."""

from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.criterion_args import base_loss_name
from detr_lightning.detr.matcher import HungarianMatcher

__all__ = ["HungarianMatcher", "SetCriterion", "base_loss_name"]
