"""Write a hard synthetic ``data=folder`` dataset for probing the weak method's stage 1: faint, small defects.

    python benchmarks/faint_defects.py /work/bench/faint --images 600 --seed 0

Grayscale images of 100-400 px per side on a textured, unevenly lit background; about 30% carry one defect of five
kinds (dark or bright blob, scratch, pits, smudge) whose contrast is two to four times the texture's noise,
with its mask under ``masks/``. It is made to be hard to tell apart from the background, not to look like any
real dataset: a place where LNet may go dark before it learns which images to light
(benchmarks/notes/weak_stage1_collapse.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

KINDS = ("blob_dark", "blob_bright", "scratch", "pits", "smudge")


def background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float]:
    """A grey surface: level, slow illumination, fine texture. Returns the image and the texture's std."""
    level = rng.uniform(70, 170)
    light = gaussian_filter(rng.normal(0, 1, (height, width)), sigma=min(height, width) / 4)
    light = light / (light.std() + 1e-6) * rng.uniform(8, 20)
    noise_std = rng.uniform(6, 14)
    texture = gaussian_filter(rng.normal(0, 1, (height, width)), sigma=rng.uniform(0.7, 1.5))
    texture = texture / (texture.std() + 1e-6) * noise_std
    return level + light + texture, noise_std


def add_defect(rng: np.random.Generator, image: np.ndarray, kind: str, noise_std: float,
               contrast: tuple[float, float] = (2.0, 4.0), radius: tuple[float, float] = (0.03, 0.08)) -> np.ndarray:
    """Add one faint defect of ``kind`` in place; return its mask (bool)."""
    height, width = image.shape
    side = min(height, width)
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
    strength = rng.uniform(*contrast) * noise_std
    if kind in ("blob_dark", "blob_bright", "smudge"):
        size = rng.uniform(*radius) * side * (2.0 if kind == "smudge" else 1.0)
        ry, rx = size * rng.uniform(0.6, 1.6), size * rng.uniform(0.6, 1.6)
        d2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        shape = np.exp(-d2 * (1.0 if kind == "smudge" else 2.0))
        sign = 1.0 if kind == "blob_bright" else -1.0
        image += sign * strength * (0.6 if kind == "smudge" else 1.0) * shape
        return shape > 0.3
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.2, 0.4) * side
        along = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
        across = -(yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
        shape = (np.abs(along) < length / 2) * np.exp(-(across / rng.uniform(0.8, 1.5)) ** 2)
        image -= strength * 1.5 * shape
        return shape > 0.3
    mask = np.zeros((height, width), dtype=bool)  # pits: a few tiny dark dots in a small area
    for _ in range(int(rng.integers(3, 8))):
        py, px = cy + rng.normal(0, 0.04 * side), cx + rng.normal(0, 0.04 * side)
        shape = np.exp(-(((yy - py) ** 2 + (xx - px) ** 2) / rng.uniform(1.5, 4.0) ** 2))
        image -= strength * 1.5 * shape
        mask |= shape > 0.3
    return mask


def write_faint_defects(root: str | Path, images: int = 600, defective_share: float = 0.3, seed: int = 0,
                        contrast: tuple[float, float] = (2.0, 4.0), radius: tuple[float, float] = (0.03, 0.08)) -> Path:
    """Write ``root/good/*.png``, ``root/<kind>/*.png`` and ``root/masks/<kind>/*.png``. Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(images):
        height, width = (int(v) for v in rng.integers(100, 401, size=2))
        image, noise_std = background(rng, height, width)
        kind = KINDS[int(rng.integers(len(KINDS)))] if rng.random() < defective_share else "good"
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        if kind != "good":
            mask = add_defect(rng, image, kind, noise_std, contrast, radius)
            (root / "masks" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask * 255).astype(np.uint8), mode="L").save(root / "masks" / kind / f"{i:04d}.png")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--defective-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contrast", type=float, nargs=2, default=(2.0, 4.0), help="times the texture noise")
    parser.add_argument("--radius", type=float, nargs=2, default=(0.03, 0.08), help="blob radius / shorter side")
    args = parser.parse_args()
    write_faint_defects(args.root, args.images, args.defective_share, args.seed, tuple(args.contrast),
                        tuple(args.radius))


if __name__ == "__main__":
    main()
