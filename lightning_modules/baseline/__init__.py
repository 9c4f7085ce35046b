"""The image-level classifier baseline: a timm backbone from scratch, BCE on image labels, CAM heat maps."""

from lightning_modules.baseline.module import ImageClassifierModule
from lightning_modules.baseline.networks import CamClassifier

__all__ = ["CamClassifier", "ImageClassifierModule"]
