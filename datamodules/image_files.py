"""Image files for inference: listing a file or a folder, and the same decoding as training.

Training (:func:`datamodules.samples.decode_sample`) reads every image as 8-bit grayscale, resizes it to
``data.image_size`` with PIL's bilinear filter on the 8-bit pixels and divides by 255. :func:`load_image`
does exactly that (or keeps the native size), so a prediction sees what training saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from datamodules.errors import DatasetError
from datamodules.samples import IMAGE_SUFFIXES, read_image, to_pixels


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(source: str | Path) -> tuple[Path, list[Path]]:
    """``(root, files)``: a single image file (root = its folder), or every image under a folder,
    recursively, sorted by path relative to the folder. Names in outputs are relative to ``root``."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{source} is not an image file (expected one of {sorted(IMAGE_SUFFIXES)})")
        return source.parent, [source]
    if not source.is_dir():
        raise DatasetError(f"input {source} does not exist")
    files = sorted((p for p in source.rglob("*") if is_image_file(p)), key=lambda p: p.relative_to(source).as_posix())
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {source}")
    return source, files


def to_tensor(image: Image.Image, size: Sequence[int] | None = None) -> torch.Tensor:
    """A (C, H, W) float tensor in [0, 1]: training's pixels (:func:`~datamodules.samples.to_pixels`) / 255."""
    return to_pixels(image, size).float().div_(255.0)


def load_image(path: Path, mode: str, size: Sequence[int] | None = None) -> tuple[Image.Image, torch.Tensor]:
    """``(original, tensor)``: the file in ``mode`` at its own size, and the model's input made from it."""
    original = read_image(path, mode)
    return original, to_tensor(original, size)
