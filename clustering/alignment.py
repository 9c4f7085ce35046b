"""Pseudo-label bookkeeping between reassignments: renaming clusters to match the previous assignment, scoring an
assignment against the true classes (logged only, never used by training)."""

from __future__ import annotations

import torch

from metrics.clustering import clustering_summary, contingency, hungarian_mapping


def truth_scores(assignment: torch.Tensor, targets: torch.Tensor | None, num_clusters: int) -> dict[str, float]:
    """NMI and Hungarian ACC of an assignment against the true classes (``-1``: unknown, then nothing);
    ``{}`` without targets or with fewer than two classes."""
    if targets is None or len(targets) != len(assignment) or bool((targets < 0).any()) or targets.unique().numel() < 2:
        return {}
    summary = clustering_summary(assignment, targets, num_clusters, max(num_clusters, int(targets.max()) + 1))
    return {"nmi_to_truth": summary["nmi"], "acc_to_truth": summary["acc"]}


def align_to(assignment: torch.Tensor, previous: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``assignment`` with its cluster ids renamed to best match ``previous`` (the one-to-one renaming that keeps
    the most images in a cluster of the same id: scipy's linear_sum_assignment on their contingency table)."""
    mapping = hungarian_mapping(contingency(assignment, previous, num_clusters, num_clusters))
    rename = torch.tensor([mapping[c] for c in range(num_clusters)], dtype=torch.long)
    return rename[assignment]
