"""A label-free choice of the texture descriptor's weight: how well k-means agrees with itself.

A clustering that reflects structure in the points is found again when k-means runs on another random subsample
with another seed; one that cuts a structureless cloud is not (Lange, Roth, Braun and Buhmann, "Stability-based
validation of clustering solutions", Neural Computation 2004; Ben-Hur, Elisseeff and Guyon, PSB 2002). The
agreement between such runs, the adjusted Rand index on the images two subsamples share, reads no label. At every
reassignment :class:`callbacks.pseudo_labels.PseudoLabelReassigner` (``descriptor_weight: auto``) clusters the
points of each candidate weight (:func:`clustering.backends.clustered_points`; weight 0 is the network's features
alone, the paper) and keeps the weight whose clustering agrees with itself best (optionally on average over the run's
reassignments, :func:`mean_agreement`): the descriptor is used where, on these images, it gives the clusters more
structure than the features alone, and not elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
from sklearn.metrics import adjusted_rand_score

from clustering.backends import KMEANS_BACKENDS, clustered_points

#: a weight whose agreement is within this of the best counts as good as the best; the smallest such weight wins
AGREEMENT_TIE = 0.01


def self_agreement(x: np.ndarray, k: int, backend: str = "faiss", runs: int = 4, fraction: float = 0.8,
                   seed: int = 0, **kmeans_options) -> float:
    """Mean adjusted Rand index between ``runs`` k-means clusterings of ``x``, each on a random ``fraction`` of the
    points with its own seed, compared pair by pair on the points both runs saw (1: the same partition every time;
    about 0: no more alike than chance)."""
    if runs < 2 or not 0.0 < fraction <= 1.0:
        raise ValueError(f"self_agreement needs runs >= 2 and fraction in (0, 1], got {runs} and {fraction}")
    rng = np.random.default_rng(seed)
    n = len(x)
    size = max(k, int(round(fraction * n)))
    labelled = []
    for run in range(runs):
        subset = np.sort(rng.choice(n, size=size, replace=False))
        labels = np.full(n, -1, dtype=np.int64)
        labels[subset] = KMEANS_BACKENDS[backend](np.ascontiguousarray(x[subset]), k, seed=seed + run,
                                                  **kmeans_options)
        labelled.append(labels)
    scores = []
    for a, b in combinations(labelled, 2):
        shared = (a >= 0) & (b >= 0)
        scores.append(adjusted_rand_score(a[shared], b[shared]))
    return float(np.mean(scores))


def agreement_by_weight(features: np.ndarray, descriptors: np.ndarray, k: int, weights: Sequence[float],
                        backend: str = "faiss", pca_dim: int | None = None, whiten: bool = True,
                        l2_normalize: bool = True, runs: int = 4, fraction: float = 0.8, seed: int = 0,
                        **kmeans_options) -> dict[float, float]:
    """Each candidate weight's :func:`self_agreement` on the points it clusters (weight 0: the features alone)."""
    if not weights:
        raise ValueError("agreement_by_weight needs at least one candidate weight")
    scores = {}
    for weight in sorted(float(w) for w in weights):
        x = clustered_points(features, pca_dim, whiten, l2_normalize, descriptors, weight)
        scores[weight] = self_agreement(x, k, backend, runs, fraction, seed, **kmeans_options)
    return scores


def pick_weight(scores: dict[float, float]) -> float:
    """The smallest weight whose agreement is within :data:`AGREEMENT_TIE` of the best, so the descriptor must
    earn its place."""
    best = max(scores.values())
    return min(w for w, s in scores.items() if s >= best - AGREEMENT_TIE)


def mean_agreement(measured: Sequence[dict[float, float]], decay: float = 1.0) -> dict[float, float]:
    """Each weight's agreement averaged over several measurements, oldest first (e.g. every reassignment of a run so
    far), the one ``age`` measurements back weighted by ``decay ** age`` (1: a plain mean; 0: the latest alone).

    One measurement is noisy: on NEU the same weight's agreement moved by up to 0.15 between reassignments 50 steps
    apart, and a choice on one measurement switched weights back and forth, each switch a different partition
    (``benchmarks/notes/cluster_neu_cpu.md``). A decaying mean is steadier and still follows the features as they
    are learnt. A weight missing from a measurement is averaged over the measurements that have it."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay lies in [0, 1], got {decay}")
    ages = range(len(measured) - 1, -1, -1)
    weights = sorted({w for m in measured for w in m})
    return {w: float(np.average([m[w] for m in measured if w in m],
                                weights=[decay ** age for age, m in zip(ages, measured, strict=True) if w in m]))
            for w in weights}

