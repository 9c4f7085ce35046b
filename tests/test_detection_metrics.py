"""Image-level metrics of the paper's protocol, on hand-made scores."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.detection import UNDERFIT_TRAIN_AP, underfit_warning
from metrics.detection import DetectionMetrics, best_f1_threshold, detection_summary

SCORES = torch.tensor([0.9, 0.8, 0.35, 0.6, 0.3, 0.2, 0.1, 0.05])
LABELS = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])


def test_fp_at_full_recall_counts_clean_images_above_the_lowest_defect() -> None:
    out = detection_summary(SCORES, LABELS)
    assert out["fp_at_full_recall"] == 1  # only 0.6 >= 0.35


def test_false_calls_at_best_f1_on_test_predictions() -> None:
    out = detection_summary(SCORES, LABELS)
    # thresholds: 0.8 -> FN 1 (F1 .8); 0.35 -> FP 1 (F1 .857): best F1 calls 0.35+
    assert (out["fp"], out["fn"], out["false_calls"]) == (1, 0, 1)


def test_average_precision_by_hand() -> None:
    # ranks: 1 (P=1), 1 (P=1), clean, 1 (P=3/4): AP = (1 + 1 + 0.75) / 3
    assert detection_summary(SCORES, LABELS)["ap"] == pytest.approx((1 + 1 + 0.75) / 3)


def test_fixed_threshold_false_calls() -> None:
    out = detection_summary(SCORES, LABELS, fixed_threshold=0.7)
    assert (out["fp_fixed"], out["fn_fixed"], out["false_calls_fixed"]) == (0, 1, 1)


def test_best_f1_threshold_sits_mid_margin_on_separable_scores() -> None:
    scores = torch.tensor([0.9, 0.7, 0.3, 0.1])
    labels = torch.tensor([1, 1, 0, 0])
    assert best_f1_threshold(scores, labels) == pytest.approx(0.5)


def test_metric_collects_batches_and_drops_repeated_ids() -> None:
    metric = DetectionMetrics()
    metric.update(SCORES[:4], LABELS[:4], torch.arange(4))
    metric.update(SCORES[4:], LABELS[4:], torch.arange(4, 8))
    metric.update(SCORES[:1], LABELS[:1], torch.tensor([0]))  # a DistributedSampler pad repeat
    assert metric.compute() == detection_summary(SCORES, LABELS)


def test_a_model_that_does_not_rank_its_training_images_is_said_to_underfit() -> None:
    """Below train AP 0.8 (the recorded runs: KolektorSDD 0.93-1.00, ELPV 0.56-0.69) a warning names the train AP
    and chance; at or above it, or without a train AP, nothing."""
    message = underfit_warning(0.58, 0.31)
    assert message is not None
    assert message.startswith("the model ranks its own training images at AP 0.58 (chance 0.31)")
    assert "model.max_steps" in message
    assert underfit_warning(UNDERFIT_TRAIN_AP, 0.31) is None and underfit_warning(0.99, 0.2) is None
    assert underfit_warning(float("nan"), 0.2) is None
