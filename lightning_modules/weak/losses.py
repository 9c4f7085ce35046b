"""The weak loss and the collaborative factor of Xu et al. (2020), Eq. 3-6.

A choice where the paper is inconsistent: it refers to the training loss by both Eq. 5 and Eq. 6 in places.
Here Eq. 5 is the loss (``alpha * L_neg + L_pos``, :func:`weak_loss`) and Eq. 6 the collaborative factor that
schedules its ``alpha`` (:func:`collaborative_alpha`); stage 3 adds DNet's BCE to Eq. 5 with ``alpha`` fixed at
``alpha_init``.
"""

from __future__ import annotations

import math

import torch


def weak_loss(heatmap: torch.Tensor, labels: torch.Tensor, alpha: float, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 3-5: the weak loss of a batch of heat maps from image-level labels only.

    Q is the mean of an image's heat map. A defective image contributes Eq. 3,
    ``L_pos = Q log Q + (1 - Q) log(1 - Q)`` (the negative entropy of Q: minimal at Q = 0.5, so some
    of the map must light up); a defect-free image contributes Eq. 4, ``L_neg = -log(1 - Q)`` (the map
    must stay dark). Eq. 5 combines the batch means: ``alpha * L_neg + L_pos``.
    """
    # squeeze Q into [eps, 1 - eps] affinely (a clamp would cut the gradient of a saturated map)
    q = eps + (1 - 2 * eps) * heatmap.flatten(1).mean(dim=1)
    defective = labels > 0.5
    zero = heatmap.new_zeros(())
    l_pos = (q * q.log() + (1 - q) * (1 - q).log())[defective].mean() if defective.any() else zero
    l_neg = (-(1 - q).log())[~defective].mean() if (~defective).any() else zero
    return alpha * l_neg + l_pos


def collaborative_alpha(iteration: int, total_iterations: int, alpha_init: float = 8.0, every: int = 30) -> float:
    """Eq. 6: ``alpha_i = alpha_init * (cos(2 pi i / k) + 3) / 4`` with ``k = round(N / n)``.

    ``alpha`` is updated every ``n = every`` iterations, so ``i = iteration // n`` counts the updates
    made so far; ``N = total_iterations`` is the length of the stage it schedules. Alpha starts at
    ``alpha_init``, falls to ``alpha_init / 2`` half way through the k updates, and rises back.
    """
    k = max(1, round(total_iterations / every))
    i = iteration // every
    return alpha_init * (math.cos(2 * math.pi * i / k) + 3) / 4


def warmed_up_alpha(alpha: float, iteration: int, warmup_iterations: int, start: float = 1.0) -> float:
    """Not in the paper: ``alpha`` ramped linearly from ``start`` to its Eq. 6 value over the first
    ``warmup_iterations`` of the stage (``alpha`` itself from then on, and with ``warmup_iterations`` 0).

    Why: a heat map that does not yet tell defective from defect-free images feels Eq. 5 only through its mean Q,
    and the two terms balance where ``log((1 - Q) / Q) = alpha / (1 - Q)`` (``dL_pos/dQ = log(Q / (1 - Q))``
    against ``alpha dL_neg/dQ = alpha / (1 - Q)``), about ``Q = exp(-alpha)``: 3.4e-4 at the paper's alpha_init 8.
    There the sigmoid's slope, and with it every gradient that could teach LNet to light the defective images, is
    ~750x smaller than at Q = 0.5, where LNet starts; and at Q = 0.5 ``L_pos`` has no gradient at all, so the first
    steps only darken the map. Starting alpha at 1 puts that balance at Q = 0.22, where the slope is 0.7 of its
    maximum, and the ramp moves it to the paper's alpha while LNet learns which images to light.
    """
    if warmup_iterations <= 0 or iteration >= warmup_iterations:
        return alpha
    return start + (alpha - start) * iteration / warmup_iterations
