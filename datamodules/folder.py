"""A user's own data: one folder of images per class, optional masks in a mirrored tree.

On disk::

    <root>/<class>/<image>.{png,jpg,jpeg,bmp,tif,tiff}     (extensions compared case-insensitively)
    <masks_root>/<class>/<image stem>.{png,...}            (optional; any of the same extensions)

``masks_root`` defaults to ``<root>/masks`` where that folder exists (so masks never become a class of
their own); a ``masks_root`` that is set must exist.

Classes are the sub-folders of ``root`` (hidden ones and ``masks_root`` itself skipped) sorted by name;
``target`` is the class index. Images of ``defect_free_class`` (default ``good``) get ``label`` 0, all
others 1 (all of them when no class has that name). Each image is its own group, named
``<class>/<file name>``.

Images not sorted into classes (``<root>/<image>``, no class folder at all) are read as one unsorted set: no
class (``target`` -1), ``label`` 1 as in a folder without a defect-free class, no masks. The clustering method
clusters them into ``model.num_clusters`` groups and reports what needs no class (cluster sizes); the weak method
and the baseline cannot learn from them. Where there are class folders, images directly in ``root`` are ignored,
with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from datamodules.base import DefectDataModule
from datamodules.checks import warn_orphan_masks
from datamodules.errors import DatasetError
from datamodules.image_files import IMAGE_SUFFIXES, image_files
from datamodules.samples import Sample


def class_folders(root: str | Path, exclude: Path | None = None) -> list[Path]:
    """The class folders of ``root``, sorted by name; none at all is an error unless images lie in ``root``
    itself (unsorted images: no classes, ``[]``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder root {root} does not exist")
    excluded = exclude.resolve() if exclude is not None else None
    folders = sorted(p for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.resolve() != excluded)
    if not folders and not image_files(root):
        raise DatasetError(f"no class folders and no images under {root}: expected <root>/<class>/<images> "
                           "(or, for the clustering method, unsorted images in <root>)")
    return folders


def find_mask(masks_root: Path, class_name: str, stem: str) -> Path | None:
    """``masks_root/<class>/<stem>.<ext>`` for the first extension that exists, else ``None``."""
    folder = masks_root / class_name
    if not folder.is_dir():
        return None
    matches = [p for p in image_files(folder) if p.stem == stem]
    return matches[0] if matches else None


#: the mask tree's folder inside ``root`` that is used when no ``masks_root`` is given
DEFAULT_MASKS = "masks"


def resolve_masks_root(root: str | Path, masks_root: str | Path | None) -> Path | None:
    """The mask tree: ``masks_root`` (which must exist), else ``<root>/masks`` where it exists, else ``None``."""
    if masks_root is not None:
        masks = Path(masks_root)
        if not masks.is_dir():
            raise DatasetError(f"mask folder {masks} (data.masks_root) does not exist")
        return masks
    default = Path(root) / DEFAULT_MASKS
    return default if default.is_dir() else None


def check_defect_free_class(root: str | Path, defect_free_class: str | None, classes: list[str]) -> None:
    """A ``defect_free_class`` that names no class folder: an error where it differs from one only in case (a
    typo that would silently call every image defective), else a warning (every image counts as defective)."""
    if defect_free_class is None or defect_free_class in classes:
        return
    near = [c for c in classes if c.lower() == defect_free_class.lower()]
    if near:
        raise DatasetError(f"no class folder {defect_free_class!r} under {root}, but there is {near[0]!r}: "
                           f"set data.defect_free_class={near[0]}")
    warnings.warn(f"no class folder {defect_free_class!r} (data.defect_free_class) under {root} (classes: "
                  f"{', '.join(classes)}): every image counts as defective, so a detection method cannot train "
                  "and clustering reports no MDR, FDR or EACC; name the defect-free folder "
                  "(data.defect_free_class=<folder>), or set data.defect_free_class=null where there is none (a "
                  "folder of defect classes only)",
                  stacklevel=3)


def list_folder_samples(root: str | Path, defect_free_class: str | None = "good",
                        masks_root: str | Path | None = None) -> list[Sample]:
    """Every image under ``root/<class>/`` (see the module docstring); an empty class folder is an error."""
    masks = resolve_masks_root(root, masks_root) if Path(root).is_dir() else None
    folders = class_folders(root, exclude=masks)
    loose = image_files(root)
    if not folders:
        return unsorted_samples(loose)
    if loose:
        warnings.warn(f"{len(loose)} image(s) directly in {root} (e.g. {loose[0].name}) belong to no class folder and "
                      "are ignored", stacklevel=2)
    check_defect_free_class(root, defect_free_class, [f.name for f in folders])
    samples = []
    for target, folder in enumerate(folders):
        images = image_files(folder)
        if not images:
            raise DatasetError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        label = 0 if folder.name == defect_free_class else 1
        for image in images:
            name = f"{folder.name}/{image.name}"
            mask = find_mask(masks, folder.name, image.stem) if masks is not None else None
            samples.append(Sample(name=name, image=image, label=label, group=name, mask=mask, target=target))
    warn_orphan_masks(masks, {(s.name.split("/")[0], Path(s.image).stem) for s in samples})
    return samples


def unsorted_samples(images: list[Path]) -> list[Sample]:
    """Images in no class folder: no class (``target`` -1), ``label`` 1 (no defect-free class), no mask."""
    return [Sample(name=image.name, image=image, label=1, group=image.name) for image in images]


class FolderDataModule(DefectDataModule):
    """A folder of class folders (see the module docstring), folds stratified by class.

    Args:
        defect_free_class: the class folder whose images are defect-free (label 0).
        masks_root: the root of the mirrored mask tree; ``None``: ``<root>/masks`` where it exists, else none.
        **kwargs: see :class:`DefectDataModule`.
    """

    download_hint = "put your images in <root>/<class>/*.png (one folder per class) and set data.root=<root>"

    def __init__(self, *args: Any, defect_free_class: str | None = "good",
                 masks_root: str | Path | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("image_size", (256, 256))
        super().__init__(*args, **kwargs)
        self.defect_free_class = defect_free_class
        self.masks_root = Path(masks_root) if masks_root else None

    @property
    def classes(self) -> list[str]:
        """The class names in target order: the class folders under the dataset folder, sorted (none for
        unsorted images)."""
        masks = resolve_masks_root(self.dataset_dir, self.masks_root) if Path(self.dataset_dir).is_dir() else None
        return [p.name for p in class_folders(self.dataset_dir, exclude=masks)]

    def list_samples(self) -> list[Sample]:
        return list_folder_samples(self.dataset_dir, self.defect_free_class, self.masks_root)
