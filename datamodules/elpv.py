"""ELPV (Deitsch et al. 2019): 2,624 electroluminescence images of solar cells, 300x300 grayscale, no masks.

Read from the installed PyPI package ``elpv-dataset`` (``pip install -e ".[elpv]"``), never copied into this
repository. Its ``data/labels.csv`` lists one cell per line, whitespace-separated::

    images/cell0001.png  1.0                 mono

the image path (relative to the csv), the probability that the cell is defective as the annotators rated it
(0, 1/3, 2/3 or 1) and the cell type (``mono`` or ``poly``). A cell is defective (label 1) when its probability
exceeds ``defect_threshold`` (0.5 by default: 2/3 and 1); ``drop_uncertain`` leaves out the cells rated 1/3, which
are otherwise defect-free. Every image is its own group; the folds are stratified by label and cell type.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamodules.base import DefectDataModule
from datamodules.errors import DatasetError
from datamodules.samples import Sample

#: the python package that ships the dataset, and the file inside its folder that lists the cells
PACKAGE = "elpv-dataset"
LABELS_FILE = Path("data") / "labels.csv"
INSTALL_HINT = 'the ELPV data comes from the optional package elpv-dataset: pip install -e ".[elpv]"'

#: probability 1/3: "probably not defective" in the dataset's annotation
UNCERTAIN = 1 / 3


def elpv_package_dir() -> Path:
    """The installed ``elpv_dataset`` package folder (found without importing it); a clear error without it."""
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"ELPV is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def read_elpv_labels(csv: Path) -> list[tuple[str, float, str]]:
    """(image path relative to the csv's folder, defect probability, cell type) per line of ``labels.csv``."""
    if not csv.is_file():
        raise DatasetError(f"ELPV labels file {csv} does not exist; {INSTALL_HINT}")
    rows = []
    for number, line in enumerate(csv.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            path, probability, kind = fields
            rows.append((path, float(probability), kind))
        except ValueError as err:
            raise DatasetError(f"{csv}:{number}: expected 'path probability type', got {line!r}") from err
    if not rows:
        raise DatasetError(f"ELPV labels file {csv} lists no cells")
    return rows


def list_elpv_samples(csv: Path, defect_threshold: float = 0.5, drop_uncertain: bool = False) -> list[Sample]:
    """The cells of ``labels.csv`` as samples; their type is the second half of :func:`elpv_strata`' stratum."""
    samples = []
    for path, probability, kind in read_elpv_labels(csv):
        if drop_uncertain and abs(probability - UNCERTAIN) < 1e-6:
            continue
        image = csv.parent / path
        if not image.is_file():
            raise DatasetError(f"ELPV image {image} (listed in {csv}) does not exist")
        name = f"{kind}/{Path(path).stem}"
        samples.append(Sample(name=name, image=image, label=int(probability > defect_threshold), group=name))
    return samples


def elpv_strata(samples: Sequence[Sample]) -> dict[str, str]:
    """Each cell's stratum: its label and its type (the part of its name before ``/``)."""
    return {s.group: f"{s.stratum}_{s.name.split('/', 1)[0]}" for s in samples}


class ElpvDataModule(DefectDataModule):
    """ELPV from the installed package (or ``root`` = a folder holding ``data/labels.csv`` in its layout).

    Args:
        root: the package folder; ``None`` finds the installed ``elpv_dataset``.
        defect_threshold: a cell is defective when its defect probability exceeds this.
        drop_uncertain: leave out the cells rated 1/3 (otherwise defect-free).
        **kwargs: see :class:`DefectDataModule`.
    """

    download_hint = INSTALL_HINT

    def __init__(self, root: str | Path | None = None, *args: Any, defect_threshold: float = 0.5,
                 drop_uncertain: bool = False, **kwargs: Any) -> None:
        if not 0.0 <= defect_threshold < 1.0:
            raise ValueError(f"data.defect_threshold must be in [0, 1), got {defect_threshold}")
        kwargs.setdefault("image_size", (300, 300))
        super().__init__(root if root is not None else elpv_package_dir(), *args, **kwargs)
        self.defect_threshold = defect_threshold
        self.drop_uncertain = drop_uncertain

    def list_samples(self) -> list[Sample]:
        return list_elpv_samples(self.root / LABELS_FILE, self.defect_threshold, self.drop_uncertain)

    def group_strata(self, samples: Sequence[Sample]) -> dict[str, str]:  # type: ignore[override]
        """Folds (and a validation hold-out) stratified by label and cell type."""
        return elpv_strata(samples)
