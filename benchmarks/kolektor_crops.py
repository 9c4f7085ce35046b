"""Write a ``data=folder`` dataset of real defects at a new scale: one crop of 100-400 px per KolektorSDD image.

    python benchmarks/kolektor_crops.py data/KolektorSDD /work/bench/ksdd_crops --seed 0

A probe of the folder presets on real images at a geometry no preset was set on: small images of varying aspect
whose defect covers a larger share of the frame than in KolektorSDD's 500x1250 parts. Each image gives exactly one
crop (so no part, and no defect, is in two folds): a defective image's crop holds its defect's centre at a random
place, a defect-free image's crop is placed at random. Height and width are drawn apart (100-400 px each). A crop
is defective when its mask has a pixel > 0 (KolektorSDD's own rule). Written as ``good/``, ``defect/`` and
``masks/defect/`` (PNG), the layout of docs/datasets.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.kolektor import list_kolektor_samples  # noqa: E402
from datamodules.samples import read_gray, read_mask  # noqa: E402

SIDES = (100, 400)


def crop_box(rng: np.random.Generator, shape: tuple[int, int], mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of one crop inside ``shape``: around the mask's centre where it has one."""
    height, width = (int(min(rng.integers(SIDES[0], SIDES[1] + 1), s)) for s in shape)
    ys, xs = np.nonzero(mask)
    if len(ys):
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        top = int(cy - rng.uniform(0.2, 0.8) * height)
        left = int(cx - rng.uniform(0.2, 0.8) * width)
    else:
        top = int(rng.integers(0, shape[0] - height + 1))
        left = int(rng.integers(0, shape[1] - width + 1))
    top = min(max(top, 0), shape[0] - height)
    left = min(max(left, 0), shape[1] - width)
    return top, left, height, width


def write_crops(source: Path, root: Path, seed: int = 0) -> dict[str, int]:
    """Write one crop per KolektorSDD image under ``root``; return the count per class folder."""
    rng = np.random.default_rng(seed)
    counts = {"good": 0, "defect": 0}
    for sample in list_kolektor_samples(source):
        image = np.asarray(read_gray(Path(sample.image)))
        mask = read_mask(Path(sample.mask)) > 0
        top, left, height, width = crop_box(rng, image.shape, mask)
        piece = mask[top:top + height, left:left + width]
        name = sample.name.replace("/", "_") + ".png"
        cls = "defect" if piece.any() else "good"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[top:top + height, left:left + width]).save(root / cls / name)
        if piece.any():
            (root / "masks" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(piece.astype(np.uint8) * 255).save(root / "masks" / cls / name)
        counts[cls] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the extracted KolektorSDD folder (kos01 ... kos50)")
    parser.add_argument("root", type=Path, help="the folder to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_crops(args.source, args.root, args.seed))


if __name__ == "__main__":
    main()
