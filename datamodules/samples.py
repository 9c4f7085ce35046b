"""The sample table every dataset is listed as, and the decoding of one sample (image and mask)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from datamodules.errors import DatasetError
from datamodules.rle import rle_decode


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    ``label`` is the image-level label (1 defective, 0 defect-free); ``target`` is the class index for
    multi-class datasets (-1 where there is none), used for evaluation and stratified folds only;
    ``group`` is the unit that must not be split across folds (a KolektorSDD commutator ``kosNN``; the
    image itself elsewhere). ``mask`` (a label image) or ``mask_rle`` (a run-length string over the
    image, see :mod:`datamodules.rle`) is a pixel label used for evaluation and pictures only, never by
    a training loss. A defective image with neither has no known mask (:attr:`mask_known`): it is left out of the
    pixel metrics, where an empty mask would count its defect as defect-free pixels.
    """

    name: str
    image: Path
    label: int
    group: str
    mask: Path | None = None
    target: int = -1
    mask_rle: str | None = None

    @property
    def mask_known(self) -> bool:
        """Whether the pixel label is known: a mask or run-length string, or a defect-free image (empty)."""
        return self.mask is not None or self.mask_rle is not None or not self.label

    @property
    def stratum(self) -> str:
        """What folds are balanced on: the class where there is one, else defective or not."""
        return f"class{self.target}" if self.target >= 0 else f"label{self.label}"


#: PIL modes of more than 8 bits per pixel (16-bit and 32-bit integer, 32-bit float), scaled by :func:`to_8bit`
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_8bit(image: Image.Image, path: Path | str = "") -> Image.Image:
    """A 16-bit, 32-bit integer or 32-bit float grayscale image as 8-bit ``L``, by its own min..max.

    Pixel ``v`` becomes ``round(255 * (v - min) / (max - min))`` (a constant image: 0). PIL's own conversion
    clips every value above 255, so a 16-bit image came out solid white. Why the image's own range rather than
    the format's (``v / 257`` for 16 bits): the format's full range has no meaning for a float TIFF, and a 12-bit
    camera stored in 16 bits (0..4095) would keep 16 grey levels of 256; the image's own range keeps its
    contrast for any container. The scale is a function of the file alone, so ``predict.py`` (the same
    decoder) sees exactly what training saw for the same file. What it gives up: brightness differences
    *between* images (each is stretched to 0..255). A file holding NaN or infinite values is an error naming it.
    """
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DatasetError(f"image {path} ({image.mode}) holds NaN or infinite values; cannot scale it to 8 bits")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def read_image(path: Path, mode: str = "L") -> Image.Image:
    """Open an image file in PIL ``mode`` (8-bit grayscale by default), raising :class:`DatasetError` naming
    the file. Images of more than 8 bits per pixel are scaled to 8 bits first (:func:`to_8bit`)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in HIGH_DEPTH_MODES:
                return to_8bit(img, path).convert(mode)
            return img.convert(mode)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err


def read_gray(path: Path) -> Image.Image:
    return read_image(path, "L")


def to_pixels(image: Image.Image, size: Sequence[int] | None = None) -> torch.Tensor:
    """A uint8 (C, H, W) tensor of ``image``, resized first to ``size`` = (H, W) with PIL's bilinear filter on
    the 8-bit pixels (training's decoding), or at its own size when ``size`` is ``None``."""
    if size is not None:
        image = image.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def read_mask(path: Path) -> np.ndarray:
    """Read a label image as a boolean mask (any value > 0 is defect; palette BMPs use their indices)."""
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"cannot read mask {path}: {err}") from err
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr > 0


def decode_sample(sample: Sample, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one sample resized to ``size`` = (H, W): a uint8 image and a bool mask, each (1, H, W).

    The mask is resized with area averaging and kept where any defect pixel falls, so thin cracks survive
    downscaling. A mask whose size differs from its image is an error.
    """
    height, width = size
    image = read_gray(sample.image)
    if sample.mask is None and sample.mask_rle is None:
        mask = np.zeros((height, width), dtype=bool)
    else:
        if sample.mask_rle is not None:
            try:
                full = rle_decode(sample.mask_rle, (image.height, image.width))
            except ValueError as err:
                raise DatasetError(f"mask of {sample.image}: {err}") from err
        else:
            full = read_mask(sample.mask)
        if full.shape != (image.height, image.width):
            raise DatasetError(
                f"mask {sample.mask} is {full.shape[1]}x{full.shape[0]} but its image {sample.image} "
                f"is {image.width}x{image.height}"
            )
        small = Image.fromarray(full.astype(np.float32)).resize((width, height), Image.Resampling.BOX)
        mask = np.asarray(small) > 0
    return to_pixels(image, size), torch.from_numpy(mask.copy())[None]
