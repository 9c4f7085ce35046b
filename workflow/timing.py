"""Timing a step the way the benchmarks do: one warm-up call (oneDNN picks its kernels on the first), then the
median of repeated calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(step: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``step`` after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
