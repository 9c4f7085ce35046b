"""Per-image results gathered over DDP ranks: each image once, in id order."""

from __future__ import annotations

import torch


def unique_by_id(ids: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sort by ``ids`` and drop repeated ids (a DistributedSampler pads the last batch with repeats).

    Returns ``(ids, *values)`` with the same order applied to every tensor in ``values``.
    """
    ids, order = ids.long().sort()
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[1:] = ids[1:] != ids[:-1]
    return (ids[keep], *(v[order][keep] for v in values))
