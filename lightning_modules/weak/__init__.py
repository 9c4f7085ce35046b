"""Weakly supervised defect detection (Xu et al., IEEE Access 2020): shared trunk, LNet, DNet with RSAM."""

from lightning_modules.weak.losses import collaborative_alpha, weak_loss
from lightning_modules.weak.module import WeakDetectionModule
from lightning_modules.weak.networks import DecisionNet, LocalizationNet, SharedTrunk, WeakDefectNet
from lightning_modules.weak.stages import Stage, StagePlan

__all__ = [
    "DecisionNet",
    "LocalizationNet",
    "SharedTrunk",
    "Stage",
    "StagePlan",
    "WeakDefectNet",
    "WeakDetectionModule",
    "collaborative_alpha",
    "weak_loss",
]
