"""The baseline a user would pick instead of the weak method: an image-level classifier trained with binary
cross-entropy on the same image labels, tested like the weak method (:class:`ImageDetectionModule`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from lightning_modules.augmentation import augment, augmentation_at
from lightning_modules.baseline.networks import CamClassifier
from lightning_modules.detection import OUTPUT_NAMES, DetectionInference, ImageDetectionModule
from lightning_modules.exporters import ExportTarget
from lightning_modules.method import from_config, register_method
from lightning_modules.weak.plan import BalancedPairs

#: the smallest input side: ResNet's five halvings leave one cell
MIN_SIDE = 32


@register_method("baseline")
class ImageClassifierModule(ImageDetectionModule):
    """A :class:`CamClassifier` (a timm backbone from scratch) trained on image labels alone.

    Each step is one batch from the same sampler as the weak method (balanced defective/defect-free pairs), with
    the same step-drawn augmentation; the loss is BCE on the image logit. The learning rate follows a cosine from
    the optimizer's ``lr`` to 0 over ``max_steps`` after a linear warm-up (a fixed recipe, chosen before any
    dataset was looked at). The heat map is the class activation map (CAM, :mod:`.networks`).

    Args:
        net: the classifier, or its config (``_target_``: built here, and saved in the hyper-parameters).
        optimizer: a partial optimizer or its config (``_partial_: true``); ``None``: inference only.
        max_steps: optimizer steps (the presets give it the weak preset's step budget).
        warmup_steps: steps of linear learning-rate warm-up.
        rotate, flip: as the weak method's (random quarter turns; flips).
        heatmap_dir, max_clean_pictures, pixel_thresholds, pool_clean_score: see :class:`ImageDetectionModule`.
        training_plan: how training batches are drawn (``model.training_plan``; default: the weak method's
            balanced defective/defect-free pairs, so that both see the same batches).
    """

    def __init__(
        self,
        net: CamClassifier | Mapping,
        optimizer: Callable[..., torch.optim.Optimizer] | Mapping | None = None,
        max_steps: int = 2250,
        warmup_steps: int = 100,
        rotate: bool = False,
        flip: bool = False,
        heatmap_dir: str | None = None,
        max_clean_pictures: int = 4,
        pixel_thresholds: int = 200,
        pool_clean_score: float | None = 0.01,
        training_plan: BalancedPairs | Mapping | None = None,
    ) -> None:
        super().__init__()
        self.save_config_hyperparameters()
        self.net: CamClassifier = from_config(net)
        self.optimizer_factory = from_config(optimizer)
        self.training_plan = from_config(training_plan) if training_plan is not None else BalancedPairs()
        self.fold_result = {}
        self._reset_test_metrics()

    min_side = MIN_SIDE

    @property
    def max_steps(self) -> int:
        return int(self.hparams.max_steps)

    def lr_factor(self, step: int) -> float:
        """The learning rate at ``step`` over the optimizer's: linear warm-up, then a cosine to 0."""
        warmup, total = self.hparams.warmup_steps, self.max_steps
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(params=self.net.parameters())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        turns, hflip, vflip = augmentation_at(self.global_step, self.hparams.rotate, self.hparams.flip)
        x = augment(batch["image"], turns, hflip, vflip)
        _, logits = self.net(x)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"].float())
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def export_target(self) -> ExportTarget:
        """Image in; the CAM heat map, the probability and the logit out."""
        return ExportTarget(DetectionInference(self.net).eval(), OUTPUT_NAMES, MIN_SIDE)
