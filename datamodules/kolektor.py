"""KolektorSDD (Tabernik et al. 2019): ``kosNN/PartM.jpg`` with ``PartM_label.bmp`` pixel labels."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datamodules.base import DefectDataModule
from datamodules.errors import DatasetError
from datamodules.samples import Sample, read_mask
from datamodules.splits import ksdd_split_from_pickle

#: The official 3-fold test split of Tabernik et al. (``split_33_33.pyb``), by commutator folder.
OFFICIAL_TEST_FOLDS: list[list[str]] = [
    [f"kos{n:02d}" for n in (2, 8, 9, 10, 15, 19, 21, 25, 27, 28, 30, 37, 38, 41, 43, 46, 47)],
    [f"kos{n:02d}" for n in (1, 3, 4, 6, 11, 17, 22, 24, 29, 31, 32, 36, 39, 40, 42, 44, 48)],
    [f"kos{n:02d}" for n in (5, 7, 12, 13, 14, 16, 18, 20, 23, 26, 33, 34, 35, 45, 49, 50)],
]

_PART = re.compile(r"^Part(\d+)\.jpg$", re.IGNORECASE)
_KOS = re.compile(r"^kos\d+$")


def list_kolektor_samples(root: str | Path) -> list[Sample]:
    """List every ``kosNN/PartM.jpg`` under ``root`` with its mask; the label is "mask has a pixel > 0"."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"KolektorSDD root {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _KOS.match(p.name))
    if not folders:
        raise DatasetError(f"no kosNN folders under {root}: expected the KolektorSDD layout kosNN/PartM.jpg")
    samples: list[Sample] = []
    for folder in folders:
        parts = sorted((p for p in folder.iterdir() if _PART.match(p.name)), key=lambda p: int(_PART.match(p.name)[1]))
        for image in parts:
            mask = image.with_name(f"{image.stem}_label.bmp")
            if not mask.is_file():
                raise DatasetError(f"image {image} has no mask: expected {mask}")
            label = int(read_mask(mask).any())
            samples.append(Sample(name=f"{folder.name}/{image.stem}", image=image, label=label,
                                  group=folder.name, mask=mask))
    return samples


class KolektorSDDDataModule(DefectDataModule):
    """KolektorSDD with the official 3 folds by commutator (or ``split_file``, or a seeded group split).

    Args:
        split_file: an official ``split_{N_POS}_{N_SEG}.pyb``; its test folds replace the built-in
            ones and its training lists restrict which commutators' defective images train.
        official_split: use :data:`OFFICIAL_TEST_FOLDS` (False: a seeded split by commutator, e.g.
            for generated data).
        **kwargs: see :class:`DefectDataModule`.
    """

    download_hint = (
        "get KolektorSDD from https://www.vicos.si/resources/kolektorsdd/ (the 'KolektorSDD.zip' with "
        "kosNN folders) and set data.root=<folder holding kos01..kos50>, or data.archive=<path to the zip>"
    )

    def __init__(self, *args: Any, split_file: str | Path | None = None, official_split: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.split_file = Path(split_file) if split_file else None
        self.official_split = official_split

    def list_samples(self) -> list[Sample]:
        return list_kolektor_samples(self.dataset_dir)

    def official_test_groups(self) -> list[list[str]] | None:
        if self.split_file is not None:
            return ksdd_split_from_pickle(self.split_file)[1]
        return OFFICIAL_TEST_FOLDS if self.official_split else None

    def official_training_groups(self) -> list[str] | None:
        """With a split file: its training folders of this fold, every image of them, defect-free ones too, as the
        reference code (mixed-segdec-net, ``data/input_ksdd.py``) reads them: with ``split_5_5`` 5 commutators."""
        if self.split_file is None:
            return None
        return ksdd_split_from_pickle(self.split_file)[0][self.fold]
