"""Scores of the folds' models put on one scale before pooling (metrics.calibration, WeakDetectionModule.pool)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.weak import WeakDetectionModule
from metrics.calibration import clean_baseline_offset, shift_scores


def _scores(logits: list[float]) -> torch.Tensor:
    return torch.sigmoid(torch.tensor(logits, dtype=torch.float64)).float()


def test_offset_moves_the_clean_median_to_the_target_score() -> None:
    scores = _scores([-6.0, -5.0, -4.0, 3.0])  # defect-free median logit -5; the defective image is ignored
    labels = torch.tensor([0, 0, 0, 1])
    assert clean_baseline_offset(scores, labels, clean_score=0.5) == pytest.approx(-5.0, abs=1e-5)
    offset = clean_baseline_offset(scores, labels, clean_score=0.01)
    assert offset == pytest.approx(-5.0 - math.log(0.01 / 0.99), abs=1e-5)
    assert float(shift_scores(scores, offset)[1]) == pytest.approx(0.01, rel=1e-4)


def test_shift_is_sigmoid_of_the_moved_logit_and_keeps_the_order() -> None:
    scores = _scores([-5.3, -5.2, -5.1, 0.0, 8.0])
    shifted = shift_scores(scores, -3.0)
    assert torch.allclose(shifted, torch.sigmoid(torch.tensor([-2.3, -2.2, -2.1, 3.0, 11.0], dtype=torch.float64)),
                          atol=1e-6)
    assert torch.equal(torch.argsort(shifted), torch.argsort(scores))


def test_offset_needs_clean_images_and_a_score_inside_0_1() -> None:
    with pytest.raises(ValueError, match="no defect-free image"):
        clean_baseline_offset(_scores([1.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="clean_score"):
        clean_baseline_offset(_scores([1.0]), torch.tensor([0]), clean_score=1.0)


def _fold(test_logits: list[float], labels: list[int], train_clean_logits: list[float]) -> dict:
    """A fold result as WeakDetectionModule.on_test_epoch_end builds it."""
    scores = _scores(test_logits)
    offset = clean_baseline_offset(_scores(train_clean_logits), torch.zeros(len(train_clean_logits)))
    return {"metrics": {"pixel_auroc": 0.5, "pixel_ap": 0.1},
            "per_image": {"label": torch.tensor(labels), "score": scores,
                          "score_pooled": shift_scores(scores, offset)}}


def test_pool_ranks_the_folds_on_their_shared_scale_and_reports_the_raw_figures() -> None:
    # each fold ranks its defect first, but fold 1's defect-free baseline (-4) lies above fold 0's defect (-4.9)
    folds = [_fold([-5.0, -5.0, -4.9], [0, 0, 1], [-5.0, -5.01, -4.99]),
             _fold([-4.0, -4.0, -3.0], [0, 0, 1], [-4.0, -4.02, -3.98])]
    pooled = WeakDetectionModule.pool(folds)
    assert pooled["ap"] == pytest.approx(1.0)
    assert pooled["fp_at_full_recall"] == 0
    assert pooled["ap_raw"] < 0.9
    assert pooled["fp_at_full_recall_raw"] == 2  # fold 1's two defect-free parts above fold 0's defect


def test_scores_shifted_near_1_keep_their_order_in_the_pool() -> None:
    """A fold whose shift moves its scores' logits above 17: in float32 they would all round to 1.0 and tie, and
    the pooled best-F1 false calls of a one-fold run would differ from the fold's own; in float64 they agree."""
    fold = _fold([5.0, 6.0, 5.5, 6.5, -3.0], [1, 1, 0, 1, 0], [-18.0, -18.2, -17.8])
    assert fold["per_image"]["score_pooled"].dtype == torch.float64
    assert fold["per_image"]["score_pooled"][:4].float().unique().tolist() == [1.0]  # what float32 would keep
    assert torch.equal(torch.argsort(fold["per_image"]["score_pooled"]), torch.argsort(fold["per_image"]["score"]))
    pooled = WeakDetectionModule.pool([fold])
    assert pooled["ap"] == pytest.approx(pooled["ap_raw"]) and pooled["false_calls"] == pooled["false_calls_raw"] == 1
