"""How a run ends, recorded in ``<run dir>/run_info.json`` and told on the console.

:func:`reported_failures` wraps a run once its config is parsed:

- success: ``"status": "success"``;
- an exception: ``"status": "failed"`` and ``"error"`` (type and message), so that a sweep summary can list
  failed jobs. Errors the project raises itself (:data:`CLEAN_ERRORS`: bad data, a bad setting, a bad
  checkpoint) print their message alone, with the hint that ``HYDRA_FULL_ERROR=1`` shows the traceback, as
  Hydra does for config errors, and exit with status 1 (in a multirun they propagate, so that Hydra records the
  failed job);
- SIGTERM (:mod:`workflow.signals`): ``"status": "interrupted"``, the resume command printed, exit status 143.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from datamodules.errors import DatasetError
from lightning_modules.checkpoints import CheckpointError
from workflow.errors import SettingError
from workflow.signals import INTERRUPTION

#: errors printed as their message alone
CLEAN_ERRORS: tuple[type[BaseException], ...] = (DatasetError, SettingError, CheckpointError)
#: exit status of a run stopped by SIGTERM (128 + 15, what a shell reports for a process killed by it)
SIGTERM_EXIT = 143
FULL_ERROR_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def record_status(out_dir: Path, status: str, **extra: object) -> None:
    """Merge ``status`` (and ``extra``) into ``<out_dir>/run_info.json`` (rank 0 only; the file is created with
    the run facts of :func:`workflow.run_info.run_info` where the run failed before writing it)."""
    if rank_zero_only.rank != 0:
        return
    path = out_dir / "run_info.json"
    try:
        info = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        info = None
    if info is None:
        from workflow.run_info import run_info

        info = run_info()
    info.update(status=status, **extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2, default=str))


def error_summary(error: BaseException) -> dict[str, str]:
    """The error's type, message and the place it was raised (the last frame of its traceback)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return {"type": type(error).__name__, "message": str(error), "where": where}


def resume_command(overrides: Sequence[str], fold: int, checkpoint: Path | None) -> str:
    """``python train.py <the run's overrides> folds=[k] ckpt_path=<last.ckpt>`` (a previous ``folds``,
    ``ckpt_path`` or ``hydra.run.dir`` override left out)."""
    dropped = ("folds=", "ckpt_path=", "hydra.run.dir=", "+ckpt_path=")
    kept = [o for o in overrides if not o.startswith(dropped)]
    ckpt = f" ckpt_path={checkpoint}" if checkpoint else ""
    return " ".join(["python train.py", *kept, f"folds=[{fold}]"]) + ckpt


def hydra_overrides() -> tuple[list[str], bool]:
    """The command line's overrides and whether this is a multirun (outside a Hydra app: none, False)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return [], False
    config = HydraConfig.get()
    return list(config.overrides.task), config.mode == RunMode.MULTIRUN


def interrupted(out_dir: Path) -> SystemExit:
    """Record the SIGTERM, print how to resume; the ``SystemExit`` to raise."""
    overrides, _ = hydra_overrides()
    fold, checkpoint = INTERRUPTION.get("fold"), INTERRUPTION.get("checkpoint")
    command = resume_command(overrides, fold, checkpoint) if fold is not None else None
    later = INTERRUPTION.get("later_folds") or []
    record_status(out_dir, "interrupted", error={"type": "SIGTERM", "message": "stopped by SIGTERM"},
                  resume=command, step=INTERRUPTION.get("step"), folds_not_started=later)
    if rank_zero_only.rank == 0:
        print(interruption_message(fold, INTERRUPTION.get("step"), command, later), file=sys.stderr, flush=True)
    return SystemExit(SIGTERM_EXIT)


def interruption_message(fold: int | None, step: int | None, command: str | None, later: Sequence[int]) -> str:
    """What the console says after SIGTERM: where it stopped, the resume command, the folds not started."""
    if command is None:
        return "Interrupted by SIGTERM before training started."
    lines = [f"Interrupted by SIGTERM (fold {fold}, step {step}). Resume with:", f"  {command}"]
    if later:
        lines.append(f"then the folds that did not start: folds=[{','.join(map(str, later))}] (no ckpt_path)")
    return "\n".join(lines)


def clean_cause(error: BaseException) -> BaseException | None:
    """The project's own error behind ``error`` (itself, or the cause Hydra's ``InstantiationException`` wraps)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, CLEAN_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


@contextmanager
def reported_failures(out_dir: str | Path) -> Iterator[None]:
    """Record how the run in ``out_dir`` ends; see the module docstring."""
    out_dir = Path(out_dir)
    INTERRUPTION.clear()
    try:
        yield
    except SIGTERMException:
        raise interrupted(out_dir) from None
    except KeyboardInterrupt:
        record_status(out_dir, "interrupted", error={"type": "KeyboardInterrupt", "message": "interrupted"})
        raise
    except SystemExit as error:
        if error.code not in (0, None):
            record_status(out_dir, "failed", error={"type": "SystemExit", "message": str(error.code)})
        raise
    except Exception as error:
        cause = clean_cause(error)
        record_status(out_dir, "failed", error=error_summary(cause or error))
        _, multirun = hydra_overrides()
        if cause is not None and not multirun and os.environ.get("HYDRA_FULL_ERROR") != "1":
            print(f"Error: {cause}\n{FULL_ERROR_HINT}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        raise
    record_status(out_dir, "success")
