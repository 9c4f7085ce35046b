"""Checks of a DataModule's arguments, before anything is read: each message names the setting or the file."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from datamodules.archive import sha256_of
from datamodules.errors import DatasetError
from workflow.errors import SettingError

#: masks without an image: how many names a warning lists
SHOWN_NAMES = 5


def check_data_args(root: str | Path, archive: str | Path | None = None, url: str | None = None,
                    sha256: str | None = None, num_folds: int = 3, num_defective: int | None = None,
                    image_size: Sequence[int] = (1, 1), hint: str = "") -> None:
    """Refuse arguments no dataset can use (:class:`SettingError`) and a root or archive that cannot be the
    dataset (:class:`DatasetError`). An empty root is checked later, when the data is fetched (:func:`check_root`).
    """
    if num_defective is not None and int(num_defective) < 0:
        raise SettingError(f"data.num_defective={num_defective} must be >= 0 (or null: every defective image)")
    if int(num_folds) < 1:  # 1: a fixed train/test split (Severstal's split_file); see workflow.run_checks
        raise SettingError(f"data.num_folds={num_folds} must be >= 1 (2 or more for cross-validation; 1 for a fixed "
                           "split, data.split_file or data.test_groups)")
    size = list(image_size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise SettingError(f"data.image_size={size} must be two positive sizes [H, W]")
    if Path(root).exists() and not Path(root).is_dir():
        raise DatasetError(f"data.root={root} is a file, not a folder; {hint}".rstrip("; "))
    if sha256 and archive:
        check_archive_sha256(Path(root), Path(archive), sha256)


def check_root(root: Path, archive: Path | None, url: str | None, hint: str) -> None:
    """Before the data is fetched (``prepare_data``): an empty ``data.root`` needs an archive to extract (or a url to
    fetch it from)."""
    if root.is_dir() and not any(root.iterdir()) and not url and not (archive is not None and archive.is_file()):
        where = f" and data.archive={archive} does not exist" if archive is not None else ""
        raise DatasetError(f"data.root={root} is an empty folder{where}; {hint}".rstrip("; "))


def recorded_sha256(root: Path, archive: Path) -> str | None:
    """The checksum :func:`datamodules.archive.extract_once` recorded for ``archive`` in ``root/.extracted``."""
    record = root / ".extracted"
    try:
        name, digest = record.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return digest if name == archive.name else None


def check_archive_sha256(root: Path, archive: Path, sha256: str) -> None:
    """``data.sha256`` against a local ``data.archive``: the checksum recorded at extraction where the archive was
    extracted already (no re-hashing), else the archive's own (before it is extracted)."""
    got = recorded_sha256(root, archive)
    if got is None:
        if not archive.is_file():
            return  # not there yet: download() checks it after fetching
        got = sha256_of(archive)
    if got.lower() != sha256.lower():
        raise DatasetError(f"checksum mismatch for data.archive={archive}: data.sha256 is {sha256}, the archive's "
                           f"is {got}")


def warn_orphan_masks(masks_root: Path | None, image_keys: set[tuple[str, str]]) -> int:
    """Warn about mask files under ``masks_root/<class>/`` that belong to no image (``(class, stem)`` not in
    ``image_keys``), with their count and the first names; return the count."""
    if masks_root is None or not masks_root.is_dir():
        return 0
    orphans = sorted(f"{p.parent.name}/{p.name}" for p in masks_root.glob("*/*")
                     if p.is_file() and not p.name.startswith(".") and (p.parent.name, p.stem) not in image_keys)
    if orphans:
        shown = ", ".join(orphans[:SHOWN_NAMES]) + (", ..." if len(orphans) > SHOWN_NAMES else "")
        warnings.warn(f"{len(orphans)} mask file(s) under {masks_root} match no image (class folder and file "
                      f"stem) and are ignored: {shown}", stacklevel=3)
    return len(orphans)
