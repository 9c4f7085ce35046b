"""Image files: the one list of image suffixes, the one helper that lists image files, and inference's decoding.

Every dataset lister and ``predict.py`` takes a file as an image when its suffix (compared case-insensitively) is in
:data:`IMAGE_SUFFIXES`, and lists a folder's images with :func:`image_files`.

Training (:func:`datamodules.samples.decode_sample`) reads every image as 8-bit grayscale, resizes it to
``data.image_size`` with PIL's bilinear filter on the 8-bit pixels and divides by 255. :func:`load_image`
does exactly that (or keeps the native size), so a prediction sees what training saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from datamodules.errors import DatasetError
from datamodules.samples import read_image, to_pixels

#: file suffixes taken as images (compared case-insensitively)
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    """A file whose suffix is one of :data:`IMAGE_SUFFIXES`."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def image_files(folder: str | Path, recursive: bool = False, key: Callable[[Path], Any] | None = None) -> list[Path]:
    """The image files directly in ``folder`` (every level below it with ``recursive``), sorted by ``key``
    (default: the path relative to ``folder``, ``/``-separated)."""
    folder = Path(folder)
    found = (p for p in (folder.rglob("*") if recursive else folder.iterdir()) if is_image_file(p))
    return sorted(found, key=key or (lambda p: p.relative_to(folder).as_posix()))


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
    files = image_files(source, recursive=True)
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
