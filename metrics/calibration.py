"""Put the scores of the folds' models on one scale before pooling them (training images only).

Pooled metrics rank the test images of all folds together, but each fold's images were scored by its own
model, and each model has its own defect-free baseline. With the weak method the decision net's output on a
defect-free part barely moves from image to image while the baseline differs between models: on real
KolektorSDD (``weak_kolektor_cpu_seed1.json``) the defect-free test logits sat at -5.45, -5.40 and -5.24 in
folds 0, 1 and 2 (standard deviations 0.04-0.13), so one fold's defect-free parts outranked other folds' faintest
defects although each fold ranked its own defects first (fold APs 0.992 / 1.000 / 0.981, pooled 0.976).

:func:`clean_baseline_offset` measures a model's baseline on its own *training* images: the median logit of
the defect-free ones (on those runs within 0.01 of the test median). :func:`shift_scores` moves every score of
that model by it, so that a defect-free training image's median score becomes ``clean_score`` in each fold.
A shift of the logit keeps the order within a fold, so per-fold metrics do not change; only pooling does.
Aligned baselines make the pooled ranking follow each fold's own ranking; that is not always a higher pooled AP
than the raw scores give (``weak_kolektor_cpu_fp32.json``: 0.972 aligned, 0.981 raw, with a weaker fold 2), which is
why the raw figures are reported too.
"""

from __future__ import annotations

import math

import torch

#: logits are taken of scores clamped to [EPS, 1 - EPS] (a float32 sigmoid reaches 0 and 1)
EPS = 1e-12


def _logit(scores: torch.Tensor) -> torch.Tensor:
    return torch.logit(scores.double(), eps=EPS)


def clean_baseline_offset(scores: torch.Tensor, labels: torch.Tensor, clean_score: float = 0.01) -> float:
    """The logit shift that moves the median score of the defect-free images (``labels`` 0) to ``clean_score``.

    Raises:
        ValueError: with no defect-free image, or ``clean_score`` outside (0, 1).
    """
    if not 0.0 < clean_score < 1.0:
        raise ValueError(f"clean_score must lie in (0, 1), got {clean_score}")
    clean = scores.flatten()[labels.flatten() < 0.5]
    if clean.numel() == 0:
        raise ValueError("no defect-free image to measure the model's baseline on")
    return float(_logit(clean).median()) - math.log(clean_score / (1.0 - clean_score))


def shift_scores(scores: torch.Tensor, offset: float) -> torch.Tensor:
    """``sigmoid(logit(scores) - offset)`` in float64; keep it so: a float32 sigmoid of a shifted logit rounds the
    scores near 0 and 1 together (every logit above ~17 becomes 1.0), and the ties change the pooled ranking."""
    return torch.sigmoid(_logit(scores) - offset)
