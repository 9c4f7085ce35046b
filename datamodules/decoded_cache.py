"""A bounded, per-process store of decoded samples (``data.cache: ram``, ``data.cache_max_gib``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch.utils.data import get_worker_info

#: ``data.cache`` values: decode at every read, or keep decoded samples in RAM up to ``cache_max_gib``
CACHE_MODES = ("none", "ram")

Decoded = tuple[torch.Tensor, ...]


class DecodedCache:
    """Decoded samples kept in RAM until ``max_bytes`` is reached: fill-until-full, no eviction.

    A sample is stored the first time it is decoded, as long as it fits in what is left of ``max_bytes`` (its
    tensors' bytes); once full, other samples are decoded at every read. Why not an LRU: training reads images
    in a random order, so an LRU smaller than the data set would hit as often as this (capacity / data) while
    evicting and re-inserting at every read; this keeps a fixed set and never churns.

    Per process: each of a loader's ``W`` DataLoader workers fills its own copy (a forked worker starts from its
    parent's entries, shared copy-on-write) up to ``max_bytes / W``, so the workers together hold at most
    ``max_bytes``; persistent workers (the training plans' loaders) keep theirs across epochs. ``max_bytes = 0``
    stores nothing.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"the cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._store: dict[Hashable, Decoded] = {}

    @classmethod
    def from_config(cls, mode: str, max_gib: float) -> DecodedCache | None:
        """The cache ``data.cache`` / ``data.cache_max_gib`` ask for: ``None`` for ``"none"``."""
        if mode not in CACHE_MODES:
            raise ValueError(f"data.cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
        if max_gib is None or max_gib < 0:
            raise ValueError(f"data.cache_max_gib must be >= 0, got {max_gib}")
        return cls(int(max_gib * 2**30)) if mode == "ram" else None

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: Hashable, decode: Callable[[], Decoded]) -> Decoded:
        """The stored value of ``key``, or ``decode()`` (stored when it fits)."""
        value = self._store.get(key)
        if value is not None:
            return value
        value = decode()
        size = sum(t.numel() * t.element_size() for t in value)
        if self.nbytes + size <= self.budget():
            self._store[key] = value
            self.nbytes += size
        return value

    def budget(self) -> int:
        """This process's share of ``max_bytes``: all of it, or ``1 / W`` in one of a loader's ``W`` workers."""
        worker = get_worker_info()
        return self.max_bytes if worker is None else self.max_bytes // max(1, worker.num_workers)

    def clear(self) -> None:
        self._store.clear()
        self.nbytes = 0
