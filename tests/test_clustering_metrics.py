"""NMI, ACC with the Hungarian mapping, MDR/FDR/EACC on hand-made assignments."""

from __future__ import annotations

import pytest
import torch

from metrics.clustering import ClusteringMetrics, clustering_summary, pooled_summary


def test_acc_uses_the_best_one_to_one_mapping() -> None:
    # clusters are the true classes renamed 0->2, 1->0, 2->1, with one mistake
    targets = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    clusters = torch.tensor([2, 2, 0, 0, 0, 0, 1, 1, 1])
    out = clustering_summary(clusters, targets, 3, 3)
    assert out["acc"] == pytest.approx(8 / 9)
    assert out["mapping"] == {2: 0, 0: 1, 1: 2}
    assert out["confusion"] == [[2, 1, 0], [0, 3, 0], [0, 0, 3]]


def test_nmi_is_one_for_a_renaming_and_zero_for_independence() -> None:
    targets = torch.tensor([0, 0, 1, 1])
    assert clustering_summary(torch.tensor([1, 1, 0, 0]), targets, 2, 2)["nmi"] == pytest.approx(1.0)
    assert clustering_summary(torch.tensor([0, 1, 0, 1]), targets, 2, 2)["nmi"] == pytest.approx(0.0, abs=1e-6)


def test_mdr_fdr_eacc_with_defect_free_as_positive() -> None:
    # class 0 defect-free. 10 images: 6 free, 4 defective
    targets = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    clusters = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 0])  # one free called defective, one defect missed
    out = clustering_summary(clusters, targets, 2, 2, defect_free_class=0)
    assert out["acc"] == pytest.approx(0.8)
    assert out["mdr"] == pytest.approx(0.1)  # defective called defect-free / all images
    assert out["fdr"] == pytest.approx(0.1)  # defect-free called defective / all images
    assert out["eacc"] == pytest.approx(0.9)


def test_more_clusters_than_classes_map_leftovers_to_their_majority() -> None:
    targets = torch.tensor([0, 0, 1, 1, 1])
    clusters = torch.tensor([0, 0, 1, 1, 2])
    assert clustering_summary(clusters, targets, 3, 2)["acc"] == pytest.approx(1.0)


def test_metric_accumulates_and_drops_repeats() -> None:
    metric = ClusteringMetrics(2, 2)
    metric.update(torch.tensor([1, 1]), torch.tensor([0, 0]), torch.tensor([0, 1]))
    metric.update(torch.tensor([0, 0, 0]), torch.tensor([1, 1, 0]), torch.tensor([2, 3, 0]))  # id 0 repeated
    out = metric.compute()
    assert out["n_images"] == 4 and out["acc"] == pytest.approx(1.0)


def test_images_without_classes_get_their_cluster_sizes_only() -> None:
    clusters, unknown = torch.tensor([0, 0, 2, 0]), torch.full((4,), -1)
    out = clustering_summary(clusters, unknown, 3, 3)
    assert out == {"n_images": 4, "cluster_sizes": [3, 0, 1], "largest_cluster_share": 0.75, "empty_clusters": 1}
    pooled = pooled_summary([(clusters, unknown), (torch.tensor([1, 2]), torch.full((2,), -1))], 3, 3)
    assert pooled == {"n_images": 6, "largest_cluster_share": (0.75 + 0.5) / 2, "empty_clusters": 2}
    labelled = clustering_summary(clusters, torch.tensor([1, 1, 0, 1]), 3, 2)
    assert labelled["acc"] == 1.0 and labelled["largest_cluster_share"] == 0.75 and labelled["empty_clusters"] == 1
