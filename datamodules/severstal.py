"""Severstal steel defect detection (Kaggle 2019): 256x1600 images with run-length masks of 4 classes.

On disk (the Kaggle release)::

    <root>/train.csv            ImageId,ClassId,EncodedPixels   (one row per image and defect class)
    <root>/train_images/<ImageId>

``EncodedPixels`` is ``"start length start length ..."``, 1-indexed, column-major over the 256x1600
(H x W) image (:mod:`datamodules.rle`). Images in ``train_images/`` without a row are defect-free. The
first Kaggle release's ``ImageId_ClassId,EncodedPixels`` (a row per image and class, empty pixels where
absent) is read too; a row with empty ``EncodedPixels`` counts as no defect in either format.

Each image is a sample and its own group, named by its id without ``.jpg`` (as in the STEEL split files);
``label`` is 1 if it has a defect; ``mask_rle`` joins all of its runs (the union mask); ``target`` is 0 for
defect-free and, with ``num_classes=5``, the ClassId 1..4 of the defect of largest area (or the lowest
ClassId, ``multi_class_rule="first"``), with ``num_classes=2`` 1 for every defective image.
"""

from __future__ import annotations

import csv
import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamodules.base import DefectDataModule
from datamodules.errors import DatasetError
from datamodules.image_files import IMAGE_SUFFIXES, image_files
from datamodules.rle import rle_runs
from datamodules.samples import Sample
from datamodules.splits import load_split_pickle

SEVERSTAL_SHAPE = (256, 1600)
MULTI_CLASS_RULES = ("largest_area", "first")
#: The class names in target order, per ``num_classes``.
SEVERSTAL_CLASSES: dict[int, list[str]] = {
    2: ["defect_free", "defective"],
    5: ["defect_free", "class_1", "class_2", "class_3", "class_4"],
}


@dataclasses.dataclass(frozen=True)
class Defect:
    """One ``train.csv`` row: a defect class of an image, its runs, their pixel count, and the line."""

    class_id: int
    rle: str
    area: int
    line: int


def rle_area(rle: str, shape: tuple[int, int]) -> int:
    """Validate a run-length string over ``shape`` (without decoding it) and return its pixel count."""
    return int(rle_runs(rle, shape)[:, 1].sum())


def _parse_row(row: list[str], old_format: bool) -> tuple[str, str, str]:
    """(ImageId, ClassId text, EncodedPixels) of a row of either format; ``ValueError`` if malformed."""
    if old_format:
        if len(row) != 2:
            raise ValueError(f"expected 2 columns ImageId_ClassId,EncodedPixels, got {len(row)}")
        image_id, sep, class_text = row[0].rpartition("_")
        if not sep:
            raise ValueError(f"ImageId_ClassId {row[0]!r} has no '_'")
        return image_id, class_text, row[1]
    if len(row) != 3:
        raise ValueError(f"expected 3 columns ImageId,ClassId,EncodedPixels, got {len(row)}")
    return row[0], row[1], row[2]


def read_severstal_csv(
    csv_path: str | Path, shape: tuple[int, int] = SEVERSTAL_SHAPE
) -> dict[str, list[Defect]]:
    """The defects of ``train.csv`` by ImageId, every run-length string validated against ``shape``.

    A malformed row (column count, ClassId not an integer 1..4, a bad run-length string) is a
    :class:`DatasetError` naming the file and line.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"Severstal annotation file {csv_path} does not exist")
    defects: dict[str, list[Defect]] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark (Excel) too
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        if header not in (["ImageId", "ClassId", "EncodedPixels"], ["ImageId_ClassId", "EncodedPixels"]):
            raise DatasetError(f"{csv_path} line 1: expected the header ImageId,ClassId,EncodedPixels, "
                               f"got {','.join(header)!r}")
        old_format = len(header) == 2
        for row in reader:
            if not row:
                continue
            where = f"{csv_path} line {reader.line_num}"
            try:
                image_id, class_text, rle = _parse_row(row, old_format)
                class_id = int(class_text)
            except ValueError as err:
                raise DatasetError(f"{where}: {err}") from err
            if not 1 <= class_id <= 4:
                raise DatasetError(f"{where}: ClassId {class_id} is not one of 1, 2, 3, 4")
            if not rle.strip():
                continue
            try:
                area = rle_area(rle, shape)
            except ValueError as err:
                raise DatasetError(f"{where}: {err}") from err
            defects.setdefault(image_id, []).append(Defect(class_id, rle.strip(), area, reader.line_num))
    return defects


def main_class(defects: Sequence[Defect], rule: str) -> int:
    """The ClassId an image with defects counts as: of largest total area (ties: lowest) or the lowest."""
    if rule == "first":
        return min(d.class_id for d in defects)
    areas: dict[int, int] = {}
    for d in defects:
        areas[d.class_id] = areas.get(d.class_id, 0) + d.area
    return max(sorted(areas), key=lambda c: areas[c])


def _stem(name: str) -> str:
    return name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in IMAGE_SUFFIXES else name


def read_steel_split_parts(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """The image ids (without ``.jpg``) of an official STEEL ``split_*.pyb``, per part: ``(train, test,
    validation)``; each item of the file is ``(image name, is fully labelled)`` or a name."""
    content = load_split_pickle(path)
    try:
        parts = list(content)  # type: ignore[call-overload]
        if len(parts) != 3:
            raise ValueError(f"{len(parts)} lists")
        train, test, validation = ([_stem(str(item if isinstance(item, str) else item[0])) for item in part]
                                   for part in parts)
    except (TypeError, ValueError, IndexError) as err:
        raise DatasetError(
            f"split file {path} is not a STEEL (train, test, validation) triple: {err}"
        ) from err
    return train, test, validation


def read_steel_split(path: str | Path) -> set[str]:
    """Every image id (without ``.jpg``) an official STEEL ``split_*.pyb`` names, in any part."""
    return {name for part in read_steel_split_parts(path) for name in part}


def paper_subset(samples: list[Sample], seed: int, clean: int = 300, per_class: int = 50) -> list[Sample]:
    """The paper's protocol: ``clean`` random defect-free images and ``per_class`` of each class 1..4.

    ``samples`` carry 5-class targets. Seeded; not enough images of a kind is an error.
    """
    rng = random.Random(seed)
    chosen: list[Sample] = []
    for target, count in [(0, clean)] + [(c, per_class) for c in range(1, 5)]:
        pool = sorted((s for s in samples if s.target == target), key=lambda s: s.name)
        if len(pool) < count:
            kind = "defect-free" if target == 0 else f"class {target}"
            raise DatasetError(f"paper_subset needs {count} {kind} images but only {len(pool)} are listed")
        chosen += rng.sample(pool, count)
    return sorted(chosen, key=lambda s: s.name)


def check_options(num_classes: int, multi_class_rule: str) -> None:
    """``num_classes`` is 2 or 5 and ``multi_class_rule`` one of :data:`MULTI_CLASS_RULES`."""
    if num_classes not in SEVERSTAL_CLASSES:
        raise DatasetError(f"Severstal num_classes must be 2 or 5, got {num_classes}")
    if multi_class_rule not in MULTI_CLASS_RULES:
        rules = ", ".join(MULTI_CLASS_RULES)
        raise DatasetError(f"Severstal multi_class_rule must be one of {rules}, got {multi_class_rule!r}")


def list_severstal_samples(
    root: str | Path,
    num_classes: int = 5,
    multi_class_rule: str = "largest_area",
    image_shape: Sequence[int] = SEVERSTAL_SHAPE,
    split_file: str | Path | None = None,
    use_paper_subset: bool = False,
    seed: int = 0,
    subset_clean: int = 300,
    subset_per_class: int = 50,
) -> list[Sample]:
    """Every image of ``<root>/train_images`` with its defects from ``<root>/train.csv``.

    Args:
        num_classes: 5 (target = ClassId, 0 defect-free) or 2 (target = label).
        multi_class_rule: ``largest_area`` or ``first`` (lowest ClassId) for images with several classes.
        image_shape: (H, W) the run-length strings are validated against (256x1600 for the real data).
        split_file: an official STEEL ``.pyb``; only the images it lists (train, test or validation) are kept
            (:class:`SeverstalDataModule` then splits them as the file does).
        use_paper_subset: keep :func:`paper_subset` (``subset_clean`` defect-free, ``subset_per_class``
            per class, chosen by ``seed``).
    """
    check_options(num_classes, multi_class_rule)
    root = Path(root)
    images_dir = root / "train_images"
    if not images_dir.is_dir():
        raise DatasetError(f"no train_images folder under {root}: expected the Severstal layout "
                           f"train.csv + train_images/<ImageId>")
    csv_path = root / "train.csv"
    defects = read_severstal_csv(csv_path, (int(image_shape[0]), int(image_shape[1])))
    images = {p.name: p for p in image_files(images_dir)}
    for image_id, rows in defects.items():
        if image_id not in images:
            raise DatasetError(f"{csv_path} line {rows[0].line}: image {image_id} is not in {images_dir}")
    samples = []
    for image_id in sorted(images):
        rows = sorted(defects.get(image_id, []), key=lambda d: (d.class_id, d.line))
        samples.append(Sample(
            name=_stem(image_id), image=images[image_id], label=int(bool(rows)), group=_stem(image_id),
            target=main_class(rows, multi_class_rule) if rows else 0,
            mask_rle=" ".join(d.rle for d in rows) if rows else None,
        ))
    if split_file is not None:
        listed = read_steel_split(split_file)
        missing = sorted(listed - {s.name for s in samples})
        if missing:
            raise DatasetError(f"split file {split_file} names {len(missing)} images not in {images_dir}, "
                               f"e.g. {', '.join(missing[:5])}")
        samples = [s for s in samples if s.name in listed]
    if use_paper_subset:
        samples = paper_subset(samples, seed, subset_clean, subset_per_class)
    if num_classes == 2:
        samples = [dataclasses.replace(s, target=s.label) for s in samples]
    return samples


class SeverstalDataModule(DefectDataModule):
    """Severstal steel defects, 2 or 5 classes, folds stratified by class.

    With ``split_file`` (an official STEEL ``split_*.pyb``, as Bozic et al.'s mixed-segdec-net reads it) the file
    is the split: one fold (``num_folds=1``), trained on its training images, tested on its test images, validated
    on its validation images.

    Args:
        num_classes, multi_class_rule, image_shape, split_file: see :func:`list_severstal_samples`.
        paper_subset: the paper's 500 images (``subset_clean`` = 300 defect-free, ``subset_per_class`` = 50
            of each class), chosen by ``seed``.
        **kwargs: see :class:`DefectDataModule`.
    """

    download_hint = (
        "get the Severstal steel defect data from https://www.kaggle.com/c/severstal-steel-defect-detection "
        "(train.csv + train_images/) and set data.root=<folder holding train.csv>, or data.archive=<the zip>"
    )

    def __init__(self, *args: Any, num_classes: int = 5, multi_class_rule: str = "largest_area",
                 image_shape: Sequence[int] = SEVERSTAL_SHAPE, paper_subset: bool = False,
                 subset_clean: int = 300, subset_per_class: int = 50, split_file: str | Path | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("image_size", SEVERSTAL_SHAPE)
        super().__init__(*args, **kwargs)
        check_options(num_classes, multi_class_rule)
        self.num_classes = num_classes
        self.classes: list[str] = list(SEVERSTAL_CLASSES[num_classes])
        self.multi_class_rule = multi_class_rule
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.paper_subset = paper_subset
        self.subset_clean = subset_clean
        self.subset_per_class = subset_per_class
        self.split_file = Path(split_file) if split_file else None

    def _split_parts(self) -> tuple[list[str], list[str], list[str]] | None:
        if self.split_file is None:
            return None
        if self.num_folds != 1:
            raise DatasetError(f"split file {self.split_file} is one train/test split: set data.num_folds=1 and "
                               f"folds=[0] (got num_folds={self.num_folds})")
        return read_steel_split_parts(self.split_file)

    def official_test_groups(self) -> list[list[str]] | None:
        parts = self._split_parts()
        return None if parts is None else [parts[1]]

    def official_training_groups(self) -> list[str] | None:
        parts = self._split_parts()
        return None if parts is None else parts[0]

    def official_validation_groups(self) -> list[str] | None:
        parts = self._split_parts()
        return None if parts is None else parts[2]

    def list_samples(self) -> list[Sample]:
        return list_severstal_samples(
            self.dataset_dir, num_classes=self.num_classes, multi_class_rule=self.multi_class_rule,
            image_shape=self.image_shape, split_file=self.split_file, use_paper_subset=self.paper_subset,
            seed=self.seed, subset_clean=self.subset_clean, subset_per_class=self.subset_per_class,
        )
