"""Clustering metrics of Bai et al. (2024) 4.1: NMI, ACC (Hungarian mapping), MDR, FDR, EACC.

True labels are used here only, never in training. With the defect-free class as the positive class:

* MDR (missed detection rate): defective images called defect-free, over all images;
* FDR (false detection rate): defect-free images called defective, over all images;
* EACC = ACC + FDR (the paper's "effective accuracy": a false alarm costs less than a miss).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics import Metric
from torchmetrics.functional.clustering import normalized_mutual_info_score

from workflow.gathering import cat_state, gather_unique


def contingency(clusters: torch.Tensor, targets: torch.Tensor, num_clusters: int, num_classes: int) -> np.ndarray:
    """Counts of (cluster, class) pairs: a ``num_clusters x num_classes`` matrix."""
    index = clusters.long() * num_classes + targets.long()
    counts = torch.bincount(index, minlength=num_clusters * num_classes)
    return counts.reshape(num_clusters, num_classes).cpu().numpy()


def hungarian_mapping(table: np.ndarray) -> dict[int, int]:
    """The one-to-one cluster -> class mapping with the most images right (scipy's linear_sum_assignment).

    Clusters left over when there are more clusters than classes go to their majority class.
    """
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
    for r in range(table.shape[0]):
        mapping.setdefault(r, int(table[r].argmax()))
    return mapping


def unknown_classes(targets: torch.Tensor) -> bool:
    """Whether the images have no classes (every target -1: unsorted images): nothing to score against."""
    return targets.numel() > 0 and bool((targets < 0).all())


def cluster_sizes(clusters: torch.Tensor, num_clusters: int) -> dict:
    """What needs no class: the images per cluster, the largest cluster's share, the clusters left empty."""
    sizes = torch.bincount(clusters.long().flatten().cpu(), minlength=num_clusters)
    n = int(sizes.sum())
    return {"n_images": n, "cluster_sizes": sizes.tolist(), "largest_cluster_share": float(sizes.max()) / max(1, n),
            "empty_clusters": int((sizes == 0).sum())}


def clustering_summary(clusters: torch.Tensor, targets: torch.Tensor, num_clusters: int, num_classes: int,
                       defect_free_class: int | None = None) -> dict:
    """NMI, ACC, the confusion matrix after mapping, and MDR/FDR/EACC when a defect-free class exists; for images
    without classes, :func:`cluster_sizes` only."""
    clusters, targets = clusters.long().flatten().cpu(), targets.long().flatten().cpu()
    sizes = cluster_sizes(clusters, num_clusters)
    if unknown_classes(targets):
        return sizes
    table = contingency(clusters, targets, num_clusters, num_classes)
    mapping = hungarian_mapping(table)
    predicted = torch.tensor([mapping[int(c)] for c in clusters], dtype=torch.long)
    n = max(1, targets.numel())
    out: dict = {
        "n_images": int(targets.numel()),
        "nmi": float(normalized_mutual_info_score(clusters, targets)),
        "acc": float((predicted == targets).sum()) / n,
        "confusion": contingency(predicted, targets, num_classes, num_classes).T.tolist(),  # rows: true class
        "mapping": mapping,
        **{k: sizes[k] for k in ("largest_cluster_share", "empty_clusters")},
    }
    if defect_free_class is not None:
        called_free = predicted == defect_free_class
        is_free = targets == defect_free_class
        out["mdr"] = float((called_free & ~is_free).sum()) / n
        out["fdr"] = float((~called_free & is_free).sum()) / n
        out["eacc"] = out["acc"] + out["fdr"]
    return out


def pooled_summary(folds: Sequence[tuple[torch.Tensor, torch.Tensor]], num_clusters: int, num_classes: int,
                   defect_free_class: int | None = None) -> dict:
    """:func:`clustering_summary` over several folds' ``(clusters, targets)``: each fold's clusters mapped to classes
    by its own Hungarian assignment, then ACC (and MDR, FDR, EACC) on all images together; NMI the mean of the
    folds' (cluster ids of different folds' models are not comparable). Images without classes: the number of
    images, the largest cluster's share (mean over folds) and the empty clusters (summed)."""
    sizes = [cluster_sizes(clusters, num_clusters) for clusters, _ in folds]
    by_size = {"largest_cluster_share": sum(s["largest_cluster_share"] for s in sizes) / len(sizes),
               "empty_clusters": sum(s["empty_clusters"] for s in sizes)}
    if all(unknown_classes(fold_targets) for _, fold_targets in folds):
        return {"n_images": sum(s["n_images"] for s in sizes), **by_size}
    predicted, targets = [], []
    for clusters, fold_targets in folds:
        mapping = hungarian_mapping(contingency(clusters, fold_targets, num_clusters, num_classes))
        predicted.append(torch.tensor([mapping[int(c)] for c in clusters], dtype=torch.long))
        targets.append(fold_targets.long().cpu())
    pooled = clustering_summary(torch.cat(predicted), torch.cat(targets), num_classes, num_classes, defect_free_class)
    nmis = [float(normalized_mutual_info_score(clusters.long().cpu(), fold_targets.long().cpu()))
            for clusters, fold_targets in folds]
    pooled["nmi"] = sum(nmis) / len(nmis)
    return {**pooled, **by_size}


class ClusteringMetrics(Metric):
    """Collects cluster ids and true classes (gathered over DDP ranks); computes :func:`clustering_summary`."""

    full_state_update = False

    def __init__(self, num_clusters: int, num_classes: int, defect_free_class: int | None = None, **kwargs) -> None:
        kwargs.setdefault("sync_on_compute", False)  # gathered() gathers over the ranks itself, by id
        super().__init__(**kwargs)
        self.num_clusters, self.num_classes, self.defect_free_class = num_clusters, num_classes, defect_free_class
        self.add_state("clusters", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")

    def update(self, clusters: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor) -> None:
        self.clusters.append(clusters.detach().long().flatten())
        self.targets.append(targets.detach().long().flatten())
        self.ids.append(ids.detach().long().flatten())

    def gathered(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clusters, targets, ids) over all ranks, each image once, ordered by id. A collective under DDP."""
        states = (self.clusters, self.targets, self.ids)
        clusters, targets, ids = (cat_state(x, torch.long, self.device) for x in states)
        ids, clusters, targets = gather_unique(ids, clusters, targets)
        return clusters, targets, ids

    def compute(self) -> dict:
        clusters, targets, _ = self.gathered()
        return clustering_summary(clusters, targets, self.num_clusters, self.num_classes, self.defect_free_class)
