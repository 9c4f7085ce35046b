"""Label-free signs that the pseudo-label clustering failed, from the reassigning callback's history.

Two failures a user should hear about at the end of a run (``workflow.run_warnings``), not only in a log line:

* an empty cluster: k-means left a cluster without images, so the head trains on fewer classes than asked for;
* pseudo-labels that never change: every reassignment reproduced the previous one (NMI to it at least
  :data:`STUCK_NMI`), so training the network did not move the clustering (e.g. a texture descriptor, which does not
  move with the network, decides it).
"""

from __future__ import annotations

from collections.abc import Sequence

#: NMI between consecutive assignments at or above this at every reassignment: the pseudo-labels never changed
STUCK_NMI = 0.95


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


def clustering_warnings(history: Sequence[dict], num_clusters: int) -> list[str]:
    """Every message of this module that applies to ``history``."""
    return [m for m in (empty_cluster_warning(history, num_clusters), stuck_labels_warning(history)) if m]
