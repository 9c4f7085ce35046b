"""DAGM 2007 (Wieler and Hahn): 10 synthetic textures, each with weakly labelled defects.

On disk (the official release), per texture ``N``::

    <root>/ClassN/Train/NNNN.PNG               (also ClassN/Test/)
    <root>/ClassN/Train/Label/Labels.txt       a header line, then tab-separated rows
                                               index  defective(0/1)  image-name  0  label-image-name-or-0
    <root>/ClassN/Train/Label/NNNN_label.PNG   the (elliptic) defect label of a defective image

``Labels.txt`` defines the samples. Train and Test images go into one table (the folds are made by the
cross-validation); each sample is its own group, named ``ClassN/Train/NNNN`` (texture and split kept in
the name), with ``label`` = ``target`` = defective. The development-set layout ``ClassN/*.png``
(defect-free) + ``ClassN_def/*.png`` (defective, no pixel labels) is read too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamodules.base import DefectDataModule
from datamodules.errors import DatasetError
from datamodules.image_files import image_files
from datamodules.samples import Sample
from datamodules.splits import assign_group_folds

MODES = ("per_texture", "pooled")
_TEXTURE = re.compile(r"^Class(\d+)$")


def texture_of(sample: Sample) -> str:
    """The texture folder (``ClassN``) of a DAGM sample, from its name."""
    return sample.name.split("/", 1)[0].removesuffix("_def")


def read_dagm_labels(labels_txt: str | Path) -> list[tuple[int, int, str, str]]:
    """The rows of a ``Labels.txt``: ``(line, defective, image name, label image name or "0")``.

    The first line is a header (skipped unless it is a 5-field row). A row without 5 whitespace-separated
    fields, or with an index or flag that is not an integer (the flag 0 or 1), is a :class:`DatasetError`
    naming the file and line.
    """
    labels_txt = Path(labels_txt)
    if not labels_txt.is_file():
        raise DatasetError(f"DAGM label file {labels_txt} does not exist")
    rows = []
    for number, line in enumerate(labels_txt.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or (number == 1 and len(fields) != 5):
            continue
        where = f"{labels_txt} line {number}"
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 5 tab-separated fields "
                               f"(index, defective, image, 0, label image), got {len(fields)}")
        if not fields[0].isdigit() or fields[1] not in ("0", "1"):
            raise DatasetError(f"{where}: expected an integer index and a defective flag 0 or 1, "
                               f"got {fields[0]!r} and {fields[1]!r}")
        rows.append((number, int(fields[1]), fields[2], fields[4]))
    if not rows:
        raise DatasetError(f"DAGM label file {labels_txt} lists no image (empty, or a header line only)")
    return rows


def list_dagm_split(folder: str | Path) -> list[Sample]:
    """The samples of one ``ClassN/Train`` or ``ClassN/Test`` folder, from its ``Label/Labels.txt``."""
    folder = Path(folder)
    labels_txt = folder / "Label" / "Labels.txt"
    prefix = f"{folder.parent.name}/{folder.name}"
    samples = []
    for line, defective, image_name, label_name in read_dagm_labels(labels_txt):
        where = f"{labels_txt} line {line}"
        image = folder / image_name
        if not image.is_file():
            raise DatasetError(f"{where}: image {image} does not exist")
        mask = None
        if label_name != "0":
            mask = folder / "Label" / label_name
            if not mask.is_file():
                raise DatasetError(f"{where}: label image {mask} does not exist")
        elif defective:
            raise DatasetError(f"{where}: defective image {image_name} has no label image")
        name = f"{prefix}/{Path(image_name).stem}"
        samples.append(Sample(name=name, image=image, label=defective, group=name, mask=mask,
                              target=defective))
    return samples


def list_dagm_dev_texture(clean_dir: Path, defective_dir: Path) -> list[Sample]:
    """The development-set layout: ``ClassN/*.png`` defect-free, ``ClassN_def/*.png`` defective, no masks."""
    samples = []
    for folder, label in ((clean_dir, 0), (defective_dir, 1)):
        for image in image_files(folder):
            name = f"{folder.name}/{image.stem}"
            samples.append(Sample(name=name, image=image, label=label, group=name, target=label))
    return samples


def find_dagm_textures(root: str | Path) -> dict[int, Path]:
    """The ``ClassN`` folders under ``root`` by texture number."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"DAGM root {root} does not exist")
    found = {int(m[1]): p for p in root.iterdir() if p.is_dir() and (m := _TEXTURE.match(p.name))}
    if not found:
        raise DatasetError(
            f"no ClassN folders under {root}: expected the DAGM 2007 layout ClassN/Train, ClassN/Test"
        )
    return dict(sorted(found.items()))


def list_dagm_texture(folder: Path) -> list[Sample]:
    """All samples of one texture folder, in the official (``Train``/``Test``) or development layout."""
    splits = [folder / s for s in ("Train", "Test") if (folder / s).is_dir()]
    if splits:
        return [s for split in splits for s in list_dagm_split(split)]
    defective_dir = folder.with_name(f"{folder.name}_def")
    if defective_dir.is_dir():
        return list_dagm_dev_texture(folder, defective_dir)
    raise DatasetError(f"{folder} has neither Train/ nor Test/ (nor a {defective_dir.name} folder beside it)")


def list_dagm_samples(root: str | Path, classes: Sequence[int] | None = None) -> list[Sample]:
    """The samples of the DAGM textures ``classes`` (texture numbers; ``None``: all found) under ``root``."""
    found = find_dagm_textures(root)
    wanted = list(classes) if classes is not None else list(found)
    missing = [n for n in wanted if n not in found]
    if missing:
        names = ", ".join(f"Class{n}" for n in missing)
        raise DatasetError(f"DAGM texture(s) {names} not found under {root}")
    return [s for n in wanted for s in list_dagm_texture(found[n])]


class DAGMDataModule(DefectDataModule):
    """DAGM 2007, defective vs defect-free, one texture (``per_texture``) or several together (``pooled``).

    Args:
        classes: the texture numbers to use (the ``ClassN`` folders); ``None``: all found. They are kept
            as ``self.textures``: the attribute ``self.classes`` holds the target names, as for every
            dataset.
        mode: ``per_texture`` (exactly one texture: ``classes=[N]``, or ``None`` where ``root`` holds only
            one) or ``pooled`` (folds stratified by texture and label).
        **kwargs: see :class:`DefectDataModule`.
    """

    download_hint = (
        "get DAGM 2007 from https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-"
        "optical-inspection (Class1..Class10 with Train/, Test/, Label/Labels.txt) and set data.root=<folder "
        "holding the ClassN folders>"
    )

    def __init__(self, *args: Any, classes: Sequence[int] | None = None, mode: str = "per_texture",
                 **kwargs: Any) -> None:
        kwargs.setdefault("image_size", (512, 512))
        super().__init__(*args, **kwargs)
        if mode not in MODES:
            raise DatasetError(f"DAGM mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.textures = [int(n) for n in classes] if classes is not None else None
        self.mode = mode
        if self.textures is not None:
            self._check_per_texture(self.textures)
        self.classes: list[str] = ["defect_free", "defective"]
        self._listed: list[Sample] | None = None

    def _check_per_texture(self, textures: Sequence[int]) -> None:
        if self.mode == "per_texture" and len(textures) != 1:
            raise DatasetError(
                f"DAGM mode per_texture takes exactly one texture, got classes={list(textures)}; "
                f"set data.classes=[N] or data.mode=pooled"
            )

    def list_samples(self) -> list[Sample]:
        if self._listed is None:
            if self.textures is None:
                self._check_per_texture(list(find_dagm_textures(self.dataset_dir)))
            self._listed = list_dagm_samples(self.dataset_dir, self.textures)
        return self._listed

    def official_test_groups(self) -> list[list[str]] | None:
        """No official folds; ``pooled`` makes its own, stratified by texture and label together."""
        if self.mode != "pooled":
            return None
        strata = {s.group: f"{texture_of(s)}/label{s.label}" for s in self.list_samples()}
        assignment = assign_group_folds(strata, self.num_folds, self.split_seed)
        return [[g for g, f in assignment.items() if f == k] for k in range(self.num_folds)]
