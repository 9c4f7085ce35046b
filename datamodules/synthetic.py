"""Generate small datasets in the real on-disk layouts, for the demo experiment and for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def commutator_strip(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured, commutator-like grayscale strip: vertical bars of copper with noise and shading."""
    x = np.arange(width)
    bars = 0.5 + 0.25 * np.sign(np.sin(2 * np.pi * x / rng.uniform(18, 26) + rng.uniform(0, 6)))
    shade = np.linspace(0.85, 1.1, height)[:, None]
    image = bars[None, :] * shade + rng.normal(0, 0.05, (height, width))
    return np.clip(image * 200 + 20, 0, 255)


def draw_crack(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, thickness: int) -> None:
    """Draw one dark, thin, wandering crack across part of the strip, and mark it in the mask."""
    height, width = image.shape
    y = rng.integers(height // 6, 5 * height // 6)
    x = rng.integers(width // 6, 5 * width // 6)
    length = rng.integers(height // 8, height // 4)
    for _ in range(length):
        y0, x0 = max(0, y - thickness), max(0, x - thickness)
        image[y0 : y + thickness, x0 : x + thickness] *= 0.2
        mask[y0 : y + thickness, x0 : x + thickness] = 255
        y = int(np.clip(y + 1, 0, height - 1))
        x = int(np.clip(x + rng.integers(-1, 2), 0, width - 1))


def write_kolektor_like(
    root: str | Path,
    num_folders: int = 12,
    parts_per_folder: int = 8,
    defective_every: int = 1,
    size: tuple[int, int] = (320, 128),
    thickness: int = 3,
    seed: int = 0,
) -> Path:
    """Write a KolektorSDD-layout dataset: ``kosNN/PartM.jpg`` + ``PartM_label.bmp`` (0/255 masks).

    Every ``defective_every``-th folder holds one defective part (Part0..Part7, seeded), like the real
    dataset where most commutators have one defective image. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for f in range(1, num_folders + 1):
        folder = root / f"kos{f:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        bad_part = int(rng.integers(parts_per_folder)) if f % defective_every == 0 else -1
        for p in range(parts_per_folder):
            image = commutator_strip(rng, height, width)
            mask = np.zeros((height, width), dtype=np.uint8)
            if p == bad_part:
                draw_crack(rng, image, mask, thickness)
            Image.fromarray(image.astype(np.uint8), mode="L").save(folder / f"Part{p}.jpg", quality=95)
            Image.fromarray(mask, mode="L").save(folder / f"Part{p}_label.bmp")
    return root
