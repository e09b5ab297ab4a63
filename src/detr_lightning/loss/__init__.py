"""DETR losses: Hungarian matcher and set criterion."""

from detr_lightning.loss.center_matcher import CenterMatcher
from detr_lightning.loss.criterion import SetCriterion, base_loss_name
from detr_lightning.loss.matcher import HungarianMatcher

__all__ = ["CenterMatcher", "HungarianMatcher", "SetCriterion", "base_loss_name"]
