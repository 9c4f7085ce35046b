"""What every image-level detection method shares: a score and a heat map per image, how a fold is tested and
how folds are pooled (AP, false calls, FP at 100% recall, pixel AUROC/AP; ``metrics/``), and prediction.

A subclass provides ``self.net``: ``net(images) -> (heatmap (N, 1, h, w) in [0, 1], logit (N,))``, its training,
and the hyper-parameters ``pixel_thresholds``, ``heatmap_dir``, ``max_clean_pictures`` and ``pool_clean_score``.
The weak method (:mod:`lightning_modules.weak`) and the image-classifier baseline (:mod:`lightning_modules.baseline`)
are two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.aggregation import MeanMetric

from lightning_modules.method import DefectMethod
from metrics.calibration import clean_baseline_offset, shift_scores
from metrics.detection import DetectionMetrics, best_f1_threshold, detection_summary
from metrics.pixel import PixelMetrics
from workflow.pictures import save_heatmap_panel
from workflow.run_warnings import add_warning

#: below this AP on its own training images a model is said to underfit (:func:`underfit_warning`); fixed before any
#: dataset was looked at for it. The recorded runs: KolektorSDD 0.93-1.00, ELPV 0.56-0.69.
UNDERFIT_TRAIN_AP = 0.8

#: the outputs of :class:`DetectionInference`, in order (the exported files' output names)
OUTPUT_NAMES: tuple[str, ...] = ("heatmap", "probability", "logit")


class DetectionInference(nn.Module):
    """``image`` (N, C, H, W), pixels / 255 in [0, 1] -> ``heatmap`` (N, 1, h, w) in [0, 1], ``probability``
    (N,) = sigmoid(``logit``) and ``logit`` (N,): a detection method's network as a plain module for export."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heatmap, logit = self.net(image)
        return heatmap, torch.sigmoid(logit), logit


def underfit_warning(train_ap: float, defective_share: float) -> str | None:
    """A message where the model ranks its own training images below :data:`UNDERFIT_TRAIN_AP` AP: it fits the
    labels it was trained on poorly (``defective_share`` is chance AP)."""
    if math.isnan(train_ap) or train_ap >= UNDERFIT_TRAIN_AP:
        return None
    return (f"the model ranks its own training images at AP {train_ap:.2f} (chance {defective_share:.2f}): it fits its "
            f"training labels poorly. More steps (model.max_steps, or the "
            f"weak stages' iterations), a larger data.image_size where defects are small, or a look at doubtful "
            f"labels may help")


class ImageDetectionModule(DefectMethod):
    """Testing, pooling and prediction of an image-level detection method.

    Testing takes two loaders: the training images (to fix a threshold without test data, and to measure the
    model's defect-free baseline), then the test images. The fold's results land in :attr:`fold_result`; the
    per-image ``score_pooled`` is the score on a scale shared by the folds (:mod:`metrics.calibration`),
    which :meth:`pool` ranks. Under DDP the scores and pixel metrics are gathered over all ranks, each image once.

    Hyper-parameters read here:
        pool_clean_score: before pooling the folds, each fold's scores are shifted (in logit) so that the median
            score of its defect-free *training* images is this; ``None`` pools the raw scores.
        heatmap_dir: where test heat-map pictures go, under the trainer's ``default_root_dir`` (all
            defective test images, ``max_clean_pictures`` defect-free ones); ``None`` saves none.
        pixel_thresholds: thresholds of the pixel PR curve.
    """

    metric_names = ("ap", "false_calls", "false_calls_fixed", "fp_at_full_recall", "ap_raw", "fp_at_full_recall_raw")
    prediction_columns = ("probability",)
    tests_training_images = True  # the threshold and the defect-free baseline come from the training images
    thresholded = True
    exportable = True
    net: nn.Module
    fold_result: dict[str, Any]

    def _reset_test_metrics(self) -> None:
        self.train_scores = DetectionMetrics()
        self.test_scores = DetectionMetrics()
        self.pixel_metrics = PixelMetrics(self.hparams.pixel_thresholds)  # per image: DDP counts each once
        self._clean_pictures = 0

    # -- validation (only with held-out training groups, ``data.val_fraction``) -----------------
    def on_validation_epoch_start(self) -> None:
        self.val_scores = DetectionMetrics().to(self.device)
        self.val_log_loss = MeanMetric().to(self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, logits = self.net(batch["image"])
        labels = batch["label"].float()
        self.val_scores.update(torch.sigmoid(logits), labels, batch["index"])
        self.val_log_loss.update(F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none"))

    def on_validation_epoch_end(self) -> None:
        """``val/ap``, false calls at the best F1 and ``val/log_loss`` (the image score's binary cross-entropy) on
        the held-out training groups: what the best checkpoint, and settings (``benchmarks/select_on_validation.py``),
        are chosen on. Logged on every rank (the scores are gathered, so the values agree). The last check's values
        also go into the fold's result as ``val_ap``, ``val_false_calls``, ``val_log_loss`` at ``val_step``."""
        metrics = self.val_scores.compute()
        values = {k: float(metrics[k]) for k in ("ap", "false_calls") if k in metrics}
        values["log_loss"] = float(self.val_log_loss.compute())
        self.record_validation(values)

    def on_test_epoch_start(self) -> None:
        self._reset_test_metrics()
        self.to(self.device)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        heatmap, logits = self.net(batch["image"])
        scores = torch.sigmoid(logits)
        if dataloader_idx == 0:
            self.train_scores.update(scores, batch["label"], batch["index"])
            return
        self.test_scores.update(scores, batch["label"], batch["index"])
        full = F.interpolate(heatmap, size=batch["image"].shape[-2:], mode="bilinear", align_corners=False)
        known = batch["mask_known"]
        if known.any():  # a defective image without a mask would count its defect as defect-free pixels
            self.pixel_metrics.update(full[known], batch["mask"][known], batch["index"][known])
        self._save_pictures(batch, heatmap)

    def _save_pictures(self, batch: dict, heatmap: torch.Tensor) -> None:
        """Under DDP each rank saves the pictures of its share of the test images (a DistributedSampler repeat is
        saved again, the same picture); the defect-free quota is split over the ranks."""
        if self.hparams.heatmap_dir is None:
            return
        world, rank = self.trainer.world_size, self.trainer.global_rank
        clean_quota = (self.hparams.max_clean_pictures + world - 1 - rank) // world
        for image, mask, heat, label, name in zip(batch["image"], batch["mask"], heatmap, batch["label"],
                                                  batch["name"], strict=True):
            if label < 0.5:
                if self._clean_pictures >= clean_quota:
                    continue
                self._clean_pictures += 1
            path = Path(self.trainer.default_root_dir) / self.hparams.heatmap_dir / f"{name.replace('/', '_')}.png"
            save_heatmap_panel(path, image, mask, heat)

    def on_test_epoch_end(self) -> None:
        train_scores, train_labels, _ = self.train_scores.gathered()
        threshold = best_f1_threshold(train_scores, train_labels) if train_labels.unique().numel() == 2 else 0.5
        scores, labels, ids = self.test_scores.gathered()  # a collective under DDP: once
        metrics = detection_summary(scores, labels, fixed_threshold=threshold)
        metrics.update(self.pixel_metrics.compute())
        metrics["train_ap"] = detection_summary(train_scores, train_labels).get("ap", float("nan"))
        underfit = underfit_warning(metrics["train_ap"], float(train_labels.float().mean()))
        if underfit is not None:
            add_warning(self, underfit)
        clean_score = self.hparams.pool_clean_score
        offset = 0.0
        if clean_score is not None and (train_labels < 0.5).any():
            offset = clean_baseline_offset(train_scores, train_labels, clean_score)
        metrics["pool_offset"] = offset
        metrics.update(self.extra_fold_metrics())
        metrics.update(getattr(self, "last_validation", {}))
        self.fold_result = {"metrics": metrics, "fixed_threshold": threshold,
                            "per_image": {"ids": ids.cpu(), "label": labels.long().cpu(), "score": scores.cpu(),
                                          "score_pooled": shift_scores(scores, offset).cpu()}}  # float64
        self.log_dict({f"test/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)},
                      rank_zero_only=True)

    @classmethod
    def pool(cls, fold_results: Sequence[Mapping[str, Any]]) -> dict:
        """Pooled metrics over folds: AP, best-F1 false calls and FP@100% recall on all test predictions, each
        fold's on the shared scale (``score_pooled``, see ``pool_clean_score``), and the same on the raw scores
        with the suffix ``_raw``; fixed-threshold false calls summed over folds (each fold keeps its own
        training-image threshold); pixel metrics averaged over folds."""
        labels = torch.cat([r["per_image"]["label"] for r in fold_results])
        raw = torch.cat([r["per_image"]["score"] for r in fold_results])
        shared = torch.cat([r["per_image"].get("score_pooled", r["per_image"]["score"]) for r in fold_results])
        pooled = detection_summary(shared, labels)
        raw_summary = detection_summary(raw, labels)
        pooled.update({f"{key}_raw": raw_summary[key] for key in ("ap", "false_calls", "fp_at_full_recall")
                       if key in raw_summary})
        pooled["false_calls_fixed"] = sum(r["metrics"].get("false_calls_fixed", 0) for r in fold_results)
        for key in ("pixel_auroc", "pixel_ap"):  # over the folds that have defect pixels to score
            values = [r["metrics"][key] for r in fold_results if not math.isnan(r["metrics"][key])]
            pooled[f"{key}_mean_over_folds"] = sum(values) / len(values) if values else math.nan
        return pooled

    def extra_fold_metrics(self) -> dict[str, float]:
        """Method-specific numbers added to each fold's metrics (none by default)."""
        return {}

    # -- inference ------------------------------------------------------------------------------
    def predict_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The defect probability (N,) (sigmoid of the logit) and the heat map (N, 1, h, w)."""
        heatmap, logits = self.net(images)
        return {"probability": torch.sigmoid(logits), "heatmap": heatmap}
