"""Image-level detection metrics of Xu et al. (2020) IV.B: AP, false calls, FP at 100% recall.

* ``ap``: area under the precision-recall curve (torchmetrics' average precision).
* ``false_calls``: FP + FN at the threshold of best F1 *chosen on the same (test) predictions*, the
  paper's protocol; optimistic, and labelled as such in reports.
* ``false_calls_fixed``: FP + FN at a threshold fixed without test data (given by the caller, e.g.
  chosen on the training images with :func:`best_f1_threshold`).
* ``fp_at_full_recall``: defect-free images scored at least as high as the lowest-scored defective one.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_average_precision, binary_precision_recall_curve

from workflow.gathering import cat_state, gather_unique


def best_f1_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The score threshold (predict defective at ``score >= t``) of best F1, placed mid-margin.

    Of the thresholds with the best F1, the returned one sits half way between that threshold and the
    next lower score, so that it generalises to unseen images rather than touching a training score.
    """
    labels = labels.long()
    precision, recall, thresholds = binary_precision_recall_curve(scores, labels)
    f1 = 2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1]).clamp_min(1e-12)
    t = float(thresholds[int(torch.argmax(f1))])
    below = scores[scores < t]
    return (t + float(below.max())) / 2 if below.numel() else t


def false_calls_at(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> tuple[int, int]:
    """(FP, FN) when images with ``score >= threshold`` are called defective."""
    pred = scores >= threshold
    positive = labels > 0.5
    return int((pred & ~positive).sum()), int((~pred & positive).sum())


def detection_summary(scores: torch.Tensor, labels: torch.Tensor, fixed_threshold: float | None = None) -> dict:
    """All image-level metrics of one set of predictions (see the module docstring). Scores are ranked in their own
    precision, float32 or more (pooled scores are float64: :func:`metrics.calibration.shift_scores`)."""
    scores = scores.flatten().to(torch.promote_types(scores.dtype, torch.float32))
    labels = labels.float().flatten()
    positives = labels > 0.5
    out: dict = {"n_images": int(labels.numel()), "n_defective": int(positives.sum())}
    if positives.all() or not positives.any():
        return out
    out["ap"] = float(binary_average_precision(scores, labels.long()))
    t = best_f1_threshold(scores, labels)
    fp, fn = false_calls_at(scores, labels, t)
    out.update(best_f1_threshold_on_test=t, false_calls=fp + fn, fp=fp, fn=fn)
    out["fp_at_full_recall"] = int((scores[~positives] >= scores[positives].min()).sum())
    if fixed_threshold is not None:
        fp, fn = false_calls_at(scores, labels, fixed_threshold)
        out.update(fixed_threshold=fixed_threshold, false_calls_fixed=fp + fn, fp_fixed=fp, fn_fixed=fn)
    return out


class DetectionMetrics(Metric):
    """Collects image scores and labels (gathered over all DDP ranks) and computes :func:`detection_summary`."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("sync_on_compute", False)  # gathered() gathers over the ranks itself, by id
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> None:
        self.scores.append(scores.detach().float().flatten())
        self.labels.append(labels.detach().float().flatten())
        self.ids.append(ids.detach().long().flatten())

    def gathered(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scores, labels, ids) over all ranks, each image once, ordered by id. A collective under DDP."""
        scores, labels = (cat_state(x, torch.float32, self.device) for x in (self.scores, self.labels))
        ids, scores, labels = gather_unique(cat_state(self.ids, torch.long, self.device), scores, labels)
        return scores, labels, ids

    def compute(self, fixed_threshold: float | None = None) -> dict:  # type: ignore[override]
        scores, labels, _ = self.gathered()
        return detection_summary(scores, labels, fixed_threshold)
