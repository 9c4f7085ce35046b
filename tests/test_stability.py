"""The label-free choice of the descriptor's weight: k-means agreeing with itself (clustering/stability.py)."""

from __future__ import annotations

import numpy as np
import pytest

from clustering.stability import agreement_by_weight, mean_agreement, pick_weight, self_agreement
from tests.test_kmeans import blobs

OPTIONS = {"pca_dim": 8, "nredo": 5}


def test_self_agreement_is_high_for_groups_and_low_for_a_structureless_cloud() -> None:
    grouped, _ = blobs(k=4, d=8)
    cloud = np.random.default_rng(5).normal(size=grouped.shape).astype(np.float32)
    assert self_agreement(grouped, 4, nredo=5) > 0.95
    assert self_agreement(cloud, 4, nredo=5) < 0.5
    with pytest.raises(ValueError, match="runs >= 2"):
        self_agreement(grouped, 4, runs=1)


def test_the_descriptor_is_weighted_in_where_it_carries_the_groups() -> None:
    """Features of noise, descriptors in 4 groups: the agreement rises with the descriptor's weight, and a
    weight above 0 is chosen."""
    descriptors, _ = blobs(k=4, d=12, seed=1)
    noise = np.random.default_rng(3).normal(size=(len(descriptors), 32)).astype(np.float32)
    scores = agreement_by_weight(noise, descriptors, 4, [0, 1, 4], **OPTIONS)
    assert pick_weight(scores) > 0 and scores[0.0] < 0.7 and max(scores.values()) > 0.9


def test_the_features_alone_are_kept_where_the_descriptor_is_noise() -> None:
    """Features in 4 groups, descriptors of noise: weight 0 (the paper) is chosen, and it agrees with itself."""
    features, _ = blobs(k=4, d=32, seed=2)
    noise = np.random.default_rng(4).normal(size=(len(features), 12)).astype(np.float32)
    scores = agreement_by_weight(features, noise, 4, [0, 1, 4], **OPTIONS)
    assert pick_weight(scores) == 0.0 and scores[0.0] > 0.95 and scores[4.0] < scores[0.0]


def test_the_choice_rests_on_a_decaying_mean_so_a_single_noisy_measurement_does_not_switch_it() -> None:
    """Weight 4 agreed best twice, weight 1 last and by a larger margin: the decaying mean keeps 4, the latest
    measurement alone (decay 0) would switch; near-ties go to the smaller weight; a weight measured fewer times is
    averaged over its own measurements."""
    measured = [{0.0: 0.60, 1.0: 0.70, 4.0: 0.96}, {0.0: 0.70, 1.0: 0.84, 4.0: 0.97}, {0.0: 0.58, 1.0: 0.99, 4.0: 0.84}]
    assert pick_weight(mean_agreement(measured, decay=0.0)) == pick_weight(measured[-1]) == 1.0
    mean = mean_agreement(measured, decay=0.7)  # weights 0.49, 0.7, 1
    assert mean[1.0] == pytest.approx((0.49 * 0.70 + 0.7 * 0.84 + 0.99) / 2.19)
    assert mean[4.0] == pytest.approx((0.49 * 0.96 + 0.7 * 0.97 + 0.84) / 2.19)
    assert pick_weight(mean) == 4.0
    assert mean_agreement(measured, decay=1.0) == pytest.approx({0.0: 0.6267, 1.0: 0.8433, 4.0: 0.9233}, abs=1e-4)
    assert pick_weight({0.0: 0.950, 2.0: 0.955, 8.0: 0.90}) == 0.0
    assert mean_agreement([{0.0: 0.5}, {0.0: 0.7, 2.0: 0.9}]) == pytest.approx({0.0: 0.6, 2.0: 0.9})
    with pytest.raises(ValueError, match="decay"):
        mean_agreement(measured, decay=-0.1)
