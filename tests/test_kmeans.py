"""The k-means backends and the uniform-over-pseudo-classes sampler."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from callbacks.pseudo_labels import PseudoLabelReassigner
from clustering.alignment import align_to, truth_scores
from clustering.backends import KMEANS_BACKENDS, cluster, fill_empty_clusters, make_faiss_kmeans, preprocess
from datamodules.sampling import UniformOverLabelsSampler
from metrics.clustering import clustering_summary


def blobs(k: int = 4, n: int = 60, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    x = np.concatenate([c + rng.normal(size=(n, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(k), n)


@pytest.mark.parametrize(("niter", "max_iter"), [(None, 100), (20, 20)])
def test_the_callback_leaves_minibatch_its_own_iterations(monkeypatch: pytest.MonkeyPatch, niter: int | None,
                                                          max_iter: int) -> None:
    """niter unset: MiniBatchKMeans keeps scikit-learn's max_iter (100), not faiss's 20; set: both take it."""
    import sklearn.cluster

    seen: dict = {}
    real = sklearn.cluster.MiniBatchKMeans

    def spy(**kwargs):  # noqa: ANN202 - a MiniBatchKMeans
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(sklearn.cluster, "MiniBatchKMeans", spy)
    callback = PseudoLabelReassigner(num_clusters=4, backend="sklearn_minibatch", pca_dim=8, niter=niter)
    cluster(blobs()[0], 4, callback.backend, seed=0, **callback.options)
    assert seen["max_iter"] == max_iter and (seen["batch_size"], seen["reassignment_ratio"]) == (256, 0.01)


@pytest.mark.parametrize("backend", sorted(KMEANS_BACKENDS))
def test_backends_recover_separated_blobs(backend: str) -> None:
    x, y = blobs()
    labels = cluster(x, 4, backend, seed=0, pca_dim=8, niter=20, nredo=2)
    out = clustering_summary(torch.from_numpy(labels), torch.from_numpy(y), 4, 4)
    assert out["acc"] == pytest.approx(1.0)
    assert np.bincount(labels, minlength=4).min() > 0


def test_the_gaussian_mixture_fits_clusters_of_unequal_spread_that_k_means_cuts_at_the_midpoint() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.3, (200, 2)), rng.normal(0, 2.0, (200, 2)) + [3.0, 0.0]]).astype(np.float32)
    y = torch.from_numpy(np.repeat([0, 1], 200))
    options = {"seed": 0, "pca_dim": None, "l2_normalize": False, "nredo": 3}
    by_gmm = clustering_summary(torch.from_numpy(cluster(x, 2, "sklearn_gmm", **options)), y, 2, 2)
    by_kmeans = clustering_summary(torch.from_numpy(cluster(x, 2, "faiss", **options)), y, 2, 2)
    assert by_gmm["acc"] > 0.95 and by_kmeans["acc"] < 0.9


def test_descriptors_clustered_beside_the_features_carry_groups_the_features_do_not_show() -> None:
    """Features of pure noise, descriptors in 4 groups: k-means on both finds the groups when the descriptors
    weigh 3 times the features, not without them. The descriptors are standardized first: half of their columns,
    noise 100 times louder than the rest, would otherwise fill the 8 principal components."""
    descriptors, y = blobs(d=24, seed=1)
    descriptors[:, :12] = np.random.default_rng(2).normal(size=(len(y), 12)) * 100  # loud columns of noise
    noise = np.random.default_rng(3).normal(size=(len(y), 32)).astype(np.float32)
    options = {"seed": 0, "pca_dim": 8, "nredo": 3}
    joint = cluster(noise, 4, descriptors=descriptors, descriptor_weight=3.0, **options)
    alone = cluster(noise, 4, **options)
    truth = torch.from_numpy(y)
    assert clustering_summary(torch.from_numpy(joint), truth, 4, 4)["acc"] > 0.95
    assert clustering_summary(torch.from_numpy(alone), truth, 4, 4)["acc"] < 0.5
    with pytest.raises(ValueError, match="239 descriptors for 240 feature vectors"):
        cluster(noise, 4, descriptors=descriptors[1:], **options)


def test_faiss_trains_on_every_point() -> None:
    km = make_faiss_kmeans(n=10_000, d=8, k=4)
    assert km.cp.max_points_per_centroid * 4 >= 10_000


def test_empty_clusters_are_filled_by_splitting_the_largest() -> None:
    x, y = blobs(k=3)
    assignment = np.where(y == 2, 1, 0)  # blobs 0 and 1 in cluster 0, blob 2 in cluster 1, cluster 2 empty
    filled = fill_empty_clusters(x, assignment, 3)
    out = clustering_summary(torch.from_numpy(filled), torch.from_numpy(y), 3, 3)
    assert out["acc"] == pytest.approx(1.0)  # the split follows the two blobs, not the distance from the centre
    alike = fill_empty_clusters(np.ones((6, 2), dtype=np.float32), np.zeros(6, dtype=np.int64), 3)
    assert np.bincount(alike, minlength=3).min() > 0  # identical points: split in order


@pytest.mark.parametrize("n", [20, 64])
def test_whitening_keeps_at_most_n_minus_1_components(n: int) -> None:
    """N points centred span N - 1 dimensions: a 64th whitened component of 64 points would be noise or NaN."""
    x = np.random.default_rng(0).normal(size=(n, 768)).astype(np.float32)
    prepared = preprocess(x, pca_dim=64, whiten=True, l2_normalize=True)
    assert prepared.shape == (n, min(64, n - 1)) and np.isfinite(prepared).all()
    assert np.abs(prepared).max() < 0.9  # no single component dominates every point


def test_too_few_points_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot make 5 clusters from 3 points"):
        cluster(np.zeros((3, 4), dtype=np.float32), 5)


def test_unknown_backend_is_named() -> None:
    with pytest.raises(ValueError, match="unknown k-means backend 'nope'"):
        cluster(np.zeros((10, 4), dtype=np.float32), 2, backend="nope")


def test_sampler_is_uniform_over_pseudo_classes_and_follows_reassignment() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    sampler = UniformOverLabelsSampler(labels, num_samples=2000, seed=0)
    drawn = labels[list(sampler)]
    assert abs(float((drawn == 1).float().mean()) - 0.5) < 0.05
    labels[:] = torch.tensor([2] * 50 + [3] * 50)  # reassigned in place
    assert set(labels[list(sampler)].tolist()) == {2, 3}


def test_reassignment_schedule_every_k_steps_until_freeze_after() -> None:
    kmeans = PseudoLabelReassigner(num_clusters=3, every_n_steps=10, freeze_after=0.5)
    due = [step for step in range(1, 101) if kmeans.due(step, 100)]
    assert due == [10, 20, 30, 40, 50]  # not after 50% of the 100 steps
    everywhere = PseudoLabelReassigner(num_clusters=3, every_n_steps=10)
    assert [s for s in range(1, 101) if everywhere.due(s, 100)] == [10, 20, 30, 40, 50, 60, 70, 80, 90]  # 100: the end
    assert [s for s in range(1, 31) if everywhere.due(s, -1)] == [10, 20, 30]  # unbounded training
    with pytest.raises(ValueError, match="freeze_after"):
        PseudoLabelReassigner(num_clusters=3, freeze_after=0.0)


def test_truth_scores_map_clusters_to_classes_and_skip_unknown_classes() -> None:
    assignment = torch.tensor([0, 0, 1, 1, 2, 2])
    # cluster 0 -> class 1, 1 -> 0, 2 -> 2: five of six right after the Hungarian mapping
    scores = truth_scores(assignment, torch.tensor([1, 1, 0, 0, 0, 2]), 3)
    assert scores["acc_to_truth"] == pytest.approx(5 / 6)
    assert 0.0 < scores["nmi_to_truth"] < 1.0
    perfect = truth_scores(assignment, torch.tensor([2, 2, 0, 0, 1, 1]), 3)  # a relabelling is perfect
    assert perfect == pytest.approx({"acc_to_truth": 1.0, "nmi_to_truth": 1.0})
    assert truth_scores(assignment, None, 3) == {}
    assert truth_scores(assignment, torch.tensor([0, 1, 0, 1, -1, 0]), 3) == {}  # unknown classes
    assert truth_scores(assignment, torch.zeros(6, dtype=torch.long), 3) == {}  # one class: nothing to score


def test_align_to_renames_clusters_after_the_previous_assignment() -> None:
    previous = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    renamed = torch.tensor([2, 2, 1, 0, 0, 1, 1, 1])  # the same clusters under other ids, one image moved
    aligned = align_to(renamed, previous, 3)
    assert aligned.tolist() == [0, 0, 2, 1, 1, 2, 2, 2]
    assert torch.equal(align_to(previous, previous, 3), previous)


def test_votes_let_a_label_given_twice_outlast_one_contrary_reassignment() -> None:
    callback = PseudoLabelReassigner(num_clusters=3, align_to_previous=True, label_momentum=0.7)
    assert callback.vote(torch.tensor([0, 1, 2])).tolist() == [0, 1, 2]  # the first assignment stands
    assert callback.vote(torch.tensor([1, 1, 2])).tolist() == [1, 1, 2]  # one vote each: the newer (1 > 0.7) wins
    assert callback.vote(torch.tensor([1, 1, 0])).tolist() == [1, 1, 2]  # 2 was given twice: 1.19 > 1
    assert callback.vote(torch.tensor([1, 1, 0])).tolist() == [1, 1, 0]  # and given up after two: 0.83 < 1.7
    assert set(callback.state_dict()) >= {"votes"}
    with pytest.raises(ValueError, match="align_to_previous"):
        PseudoLabelReassigner(num_clusters=3, label_momentum=0.7)


def test_a_partition_that_merges_the_pseudo_labels_is_refused_once_then_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``refuse_merges``: a k-means partition that joins two current clusters (a sharp change that grows the largest
    1.5 times) leaves the pseudo-labels and the votes as they are; proposed again at the next reassignment, it wins."""
    import callbacks.pseudo_labels as module

    balanced = torch.arange(4).repeat_interleave(10)  # 4 clusters of 10
    merged = balanced.clone()
    merged[balanced == 1] = 0  # clusters 0 and 1 joined (20 images) ...
    merged[(balanced == 2) & (torch.arange(40) % 2 == 0)] = 1  # ... and cluster 2 split in two (NMI 0.8)
    proposals = iter([balanced, merged, merged, balanced])
    monkeypatch.setattr(module, "cluster", lambda *args, **kwargs: next(proposals).numpy())
    trainer = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(broadcast=lambda x, src: x),
                              global_step=0, loggers=[], datamodule=None)
    callback = PseudoLabelReassigner(num_clusters=4, align_to_previous=True, label_momentum=0.7, refuse_merges=True,
                                     score_against_truth=False, progress=False)

    def reassign() -> torch.Tensor:
        align = callback.previous is not None
        assignment = callback._cluster(trainer, torch.zeros(40, 2), 40, {}, align)
        callback._record(trainer, assignment, 0.0, False)
        trainer.global_step += 50
        return assignment

    assert torch.equal(reassign(), balanced)
    votes = callback.votes.clone()
    assert torch.equal(reassign(), balanced)  # refused: pseudo-labels and votes kept
    assert torch.equal(callback.votes, votes)
    refused = callback.history[-1]
    assert refused["sizes"] == [10] * 4 and max(refused["refused_sizes"]) == 20
    assert refused["refused_nmi_to_previous"] < 0.9
    # the same merge again: accepted (its one vote beats 0.7; the halves of cluster 2 are named by alignment)
    assert sorted(torch.bincount(reassign()).tolist()) == [5, 5, 10, 20]
    assert "refused_sizes" not in callback.history[-1]
    assert torch.bincount(reassign()).tolist() == [10] * 4  # undoing it is never refused
    with pytest.raises(ValueError, match="align_to_previous"):
        PseudoLabelReassigner(num_clusters=3, refuse_merges=True)
