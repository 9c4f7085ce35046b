"""Images that cannot be read, found before predicting: ``predict.py on_error=abort|skip``.

``abort`` (the default) stops at the first unreadable file with an error naming it, before anything is written;
``skip`` warns, leaves such files out and lists them (``name``, ``error``) for ``predict_info.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from datamodules.errors import DatasetError
from workflow.errors import SettingError

log = logging.getLogger(__name__)

ON_ERROR = ("abort", "skip")


def read_error(path: Path) -> str | None:
    """Why ``path`` cannot be decoded, or ``None`` where it can."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - PIL raises many types for a bad file
        return f"{type(error).__name__}: {error}"
    return None


def screen_images(files: Sequence[Path], root: Path, on_error: str = "abort") -> tuple[list[Path], list[dict]]:
    """(readable files, skipped ``{"name", "error"}``); see the module docstring."""
    if on_error not in ON_ERROR:
        raise SettingError(f"on_error={on_error!r} must be one of {', '.join(ON_ERROR)}")
    readable, skipped = [], []
    for path in files:
        error = read_error(path)
        if error is None:
            readable.append(path)
            continue
        if on_error == "abort":
            raise DatasetError(f"cannot read image {path} ({error}); nothing was written. Remove it, or pass "
                               "on_error=skip to predict the other images")
        skipped.append({"name": path.relative_to(root).as_posix(), "error": error})
    if skipped:
        log.warning("skipped %d unreadable image(s) (on_error=skip, listed in predict_info.json): %s",
                    len(skipped), ", ".join(s["name"] for s in skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    if not readable:
        raise DatasetError(f"none of the {len(files)} image(s) under {root} can be read (on_error=skip)")
    return readable, skipped
