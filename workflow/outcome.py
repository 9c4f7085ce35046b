"""How a finished, failed or unfinished run ended, read back from its ``run_info.json`` (written by
:mod:`workflow.failure`); light, for the sweep summary."""

from __future__ import annotations

import json
from pathlib import Path


def job_outcome(run_dir: Path) -> str:
    """How the run in ``run_dir`` ended, from its ``run_info.json``: ``failed: DatasetError: <message>``,
    ``interrupted ...``, or ``unfinished`` where no status was written (still running, or killed outright)."""
    try:
        info = json.loads((Path(run_dir) / "run_info.json").read_text())
    except (OSError, ValueError):
        return "unfinished"
    error = info.get("error") or {}
    status = info.get("status", "unfinished")
    return f"{status}: {error.get('type')}: {error.get('message')}" if error else status
