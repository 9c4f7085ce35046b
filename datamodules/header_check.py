"""A check of every sample's files before training, from their headers alone (no pixel is decoded).

Images decode when a loader asks for them (:class:`datamodules.dataset.SampleDataset`), so a file that cannot be read
or a mask of the wrong size would otherwise surface mid-run. Opening a file reads only its header: the whole check
costs milliseconds per thousand images.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from datamodules.errors import DatasetError
from datamodules.samples import Sample


def header_size(path: Path, kind: str) -> tuple[int, int]:
    """(width, height) from the file's header, or a :class:`DatasetError` naming the file."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"cannot read {kind} {path}: {err}") from err


def check_headers(samples: Iterable[Sample]) -> None:
    """Every image opens, and every mask file has its image's size."""
    for sample in samples:
        width, height = header_size(sample.image, "image")
        if sample.mask is not None:
            mask_width, mask_height = header_size(sample.mask, "mask")
            if (mask_width, mask_height) != (width, height):
                raise DatasetError(f"mask {sample.mask} is {mask_width}x{mask_height} but its image {sample.image} "
                                   f"is {width}x{height}")
