"""Label-free signs that the pseudo-label clustering failed, from the reassigning callback's history.

Failures a user should hear about at the end of a run (``workflow.run_warnings``), not only in a log line:

* an empty cluster: k-means left a cluster without images, so the head trains on fewer classes than asked for;
* pseudo-labels that never change: every reassignment reproduced the previous one (NMI to it at least
  :data:`STUCK_NMI`), so training the network did not move the clustering (e.g. a texture descriptor, which does not
  move with the network, decides it);
* a classifier that leaves clusters empty on the test images (:func:`empty_test_clusters_warning`): it uses fewer
  clusters than it was trained on (a collapsed head, or test images unlike the training images);
* clusters that look merged: at a reassignment the partition changed sharply (NMI to the previous assignment below
  :data:`SHARP_NMI`) and the largest cluster grew by at least :data:`MERGE_GROWTH` times. On NEU (3-fold run of
  ``cluster_neu_cpu``, ``benchmarks/notes/cluster_neu_cpu.md``) one such step merged two classes for good (the
  descriptor's ``auto`` weight had moved to a stable but wrong partition); both thresholds are judgement, not fitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

#: NMI between consecutive assignments at or above this at every reassignment: the pseudo-labels never changed
STUCK_NMI = 0.95
#: a reassignment this far from the previous one (NMI) changed the partition sharply
SHARP_NMI = 0.9
#: ... and a largest cluster this many times the previous largest looks like a merge
MERGE_GROWTH = 1.5


def looks_merged(before_sizes: Sequence[int], after_sizes: Sequence[int], nmi_to_before: float) -> bool:
    """Whether a partition with ``after_sizes`` looks like a merge of the one with ``before_sizes``: it changed sharply
    (NMI between them below :data:`SHARP_NMI`) and its largest cluster is at least :data:`MERGE_GROWTH` times the
    earlier largest."""
    return (nmi_to_before < SHARP_NMI and len(before_sizes) > 0 and len(after_sizes) > 0
            and max(after_sizes) >= MERGE_GROWTH * max(before_sizes))


def empty_cluster_warning(history: Sequence[dict], num_clusters: int) -> str | None:
    """A message where a reassignment left clusters empty (``history``: the callback's records with ``sizes``)."""
    empty = [(r["step"], sum(1 for n in r["sizes"] if n == 0)) for r in history if min(r["sizes"], default=0) == 0]
    if not empty:
        return None
    step, count = empty[-1]
    return (f"k-means left {count} of {num_clusters} clusters empty (at {len(empty)} of {len(history)} "
            f"reassignments, the last at step {step}): fewer clusters than model.num_clusters were trained; check "
            "model.num_clusters against the number of classes, or the features (too few images, identical images)")


def stuck_labels_warning(history: Sequence[dict]) -> str | None:
    """A message where every reassignment after the first matched the previous one (NMI >= :data:`STUCK_NMI`)."""
    nmis = [r["nmi_to_previous"] for r in history if "nmi_to_previous" in r]
    if len(nmis) < 2 or min(nmis) < STUCK_NMI:
        return None
    return (f"the pseudo-labels never changed: NMI to the previous assignment >= {min(nmis):.3f} at all "
            f"{len(nmis)} reassignments after the first, so training did not move the clustering (a texture "
            "descriptor may decide it alone: try callbacks.pseudo_labels.descriptor=null, or more steps)")


def merged_clusters_warning(history: Sequence[dict]) -> str | None:
    """A message where a reassignment changed the partition sharply (NMI to the previous < :data:`SHARP_NMI`) while
    its largest cluster grew to at least :data:`MERGE_GROWTH` times the previous largest (the last such step)."""
    merges = [(before, after) for before, after in pairwise(history)
              if looks_merged(before["sizes"], after["sizes"], after.get("nmi_to_previous", 1.0))]
    if not merges:
        return None
    before, after = merges[-1]
    weight = (f" (the descriptor weight chosen there: {after['descriptor_weight']:g}; a fixed "
              "callbacks.pseudo_labels.descriptor_weight or descriptor=null avoids the choice)"
              if "descriptor_weight" in after else "")
    return (f"at step {after['step']} the pseudo-labels changed sharply (NMI to the previous assignment "
            f"{after['nmi_to_previous']:.3f}) and the largest cluster grew from {max(before['sizes'])} to "
            f"{max(after['sizes'])} images: k-means may have merged classes{weight}")


#: test images per cluster from which on an empty cluster on the test images is a warning (fewer: it may be chance)
TEST_IMAGES_PER_CLUSTER = 2


def empty_test_clusters_warning(sizes: Sequence[int]) -> str | None:
    """A message where the trained classifier left clusters empty on the test images (``sizes``: test images per
    cluster), where there are at least :data:`TEST_IMAGES_PER_CLUSTER` test images per cluster."""
    n, k = sum(sizes), len(sizes)
    empty = sum(1 for size in sizes if size == 0)
    if not empty or n < TEST_IMAGES_PER_CLUSTER * k:
        return None
    return (f"on the {n} test images the classifier used {k - empty} of its {k} clusters (the largest took "
            f"{max(sizes) / n:.0%}): its head collapsed, or the test images differ from the training images; "
            "train longer, or check model.num_clusters")


def clustering_warnings(history: Sequence[dict], num_clusters: int) -> list[str]:
    """Every message of this module that applies to ``history``."""
    checks = (empty_cluster_warning(history, num_clusters), stuck_labels_warning(history),
              merged_clusters_warning(history))
    return [m for m in checks if m]
