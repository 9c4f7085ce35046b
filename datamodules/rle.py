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
        pairs = np.asarray(values, dtype=np.int64).reshape(-1, 2)
    except ValueError as err:
        raise ValueError(f"run-length string has a non-integer value: {err}") from err
    starts, lengths = pairs[:, 0], pairs[:, 1]
    bad = np.flatnonzero((starts < 1) | (lengths < 1))
    if bad.size:
        raise ValueError(f"run ({starts[bad[0]]}, {lengths[bad[0]]}) has a non-positive start or length")
    beyond = np.flatnonzero(starts - 1 + lengths > height * width)
    if beyond.size:
        raise ValueError(f"run ({starts[beyond[0]]}, {lengths[beyond[0]]}) goes beyond the {width}x{height} image")
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
