"""Run-length encoding of masks as in the Severstal ``train.csv``: 1-indexed, column-major pairs."""

from __future__ import annotations

import numpy as np


def rle_runs(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The validated ``(start, length)`` runs of ``"start length start length ..."`` over ``shape`` (H, W).

    Raises ``ValueError`` for an odd count of numbers, a non-integer, a non-positive start or length, or
    a run beyond the image; callers add the file and line.
    """
    height, width = shape
    values = rle.split()
    if len(values) % 2:
        raise ValueError(f"run-length string has an odd number of values ({len(values)})")
    try:
        numbers = [int(v) for v in values]  # Python ints: a huge value cannot wrap around as int64 would
    except ValueError as err:
        raise ValueError(f"run-length string has a non-integer value: {err}") from err
    for start, length in zip(numbers[0::2], numbers[1::2], strict=True):
        if start < 1 or length < 1:
            raise ValueError(f"run ({start}, {length}) has a non-positive start or length")
        if start - 1 + length > height * width:
            raise ValueError(f"run ({start}, {length}) goes beyond the {width}x{height} image")
    pairs = np.asarray(numbers, dtype=np.int64).reshape(-1, 2)
    return pairs


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode ``"start length ..."`` (1-indexed, column-major over ``shape`` = (H, W)) to a bool mask."""
    height, width = shape
    flat = np.zeros(height * width, dtype=bool)
    for start, length in rle_runs(rle, shape):
        flat[start - 1 : start - 1 + length] = True
    return flat.reshape(width, height).T


def rle_encode(mask: np.ndarray) -> str:
    """Encode a bool mask as 1-indexed, column-major ``"start length ..."`` (inverse of :func:`rle_decode`)."""
    flat = np.concatenate([[0], mask.T.flatten().astype(np.int8), [0]])
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends, strict=True))
