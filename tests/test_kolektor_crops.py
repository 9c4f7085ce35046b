"""benchmarks/kolektor_crops.py: one crop per KolektorSDD image, its defect kept, readable as ``data=folder``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.kolektor_crops import SIDES, write_crops
from datamodules.folder import list_folder_samples
from datamodules.kolektor import list_kolektor_samples
from datamodules.synthetic import write_kolektor_like


def test_one_crop_per_image_with_its_defect(tmp_path: Path) -> None:
    source = write_kolektor_like(tmp_path / "ksdd", num_folders=4, parts_per_folder=3, size=(600, 240), seed=3)
    counts = write_crops(source, tmp_path / "crops", seed=0)
    originals = list_kolektor_samples(source)
    assert counts == {"good": sum(s.label == 0 for s in originals), "defect": sum(s.label for s in originals)}

    samples = list_folder_samples(tmp_path / "crops")
    assert len(samples) == len(originals)
    assert len({s.name.split("/")[1] for s in samples}) == len(originals)  # each source image once
    for sample in samples:
        height, width = np.asarray(Image.open(sample.image)).shape
        assert SIDES[0] <= height <= min(SIDES[1], 600) and SIDES[0] <= width <= min(SIDES[1], 240)
        if sample.label:
            mask = np.asarray(Image.open(sample.mask))
            assert mask.shape == (height, width) and mask.any()
        else:
            assert sample.mask is None
