"""Progress lines that read well in a log file: ``step 200/2250 (9%) stage decision, 3m12s elapsed, ETA 32m``.

The CPU presets switch Lightning's progress bar off (a bar redrawn with carriage returns is noise in a log file);
:class:`ProgressLog` keeps something moving: the step count the fold will run at its start, then a line every
``every_n_steps`` steps (about 20 lines per fold by default) and at the last step, through the run's logger (so
also into Hydra's ``<run dir>/train.log``).
"""

from __future__ import annotations

import logging
import time

import lightning as L

log = logging.getLogger(__name__)

#: lines per fold when ``every_n_steps`` is not given
DEFAULT_LINES = 20


def duration(seconds: float) -> str:
    """``1h02m``, ``3m12s`` or ``45s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def total_steps(trainer: L.Trainer) -> int:
    """The optimizer steps this fit will make: ``max_steps`` where set, else Lightning's estimate from the epochs."""
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    estimated = trainer.estimated_stepping_batches
    return int(estimated) if estimated != float("inf") else 0


def stage_name(pl_module: L.LightningModule, step: int) -> str | None:
    """The weak method's stage at ``step`` (its :class:`~lightning_modules.weak.stages.StagePlan`), else None."""
    plan = getattr(pl_module, "plan", None)
    try:
        return str(plan.locate(step)[1].name)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


class ProgressLog(L.Callback):
    """Log the fold's step count when training starts, then step, stage, elapsed time and ETA every
    ``every_n_steps`` steps (``None``: about :data:`DEFAULT_LINES` lines per fold; 0: only the start line)."""

    def __init__(self, every_n_steps: int | None = None, fold: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"progress_every must be >= 0 or null, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.prefix = f"fold {fold}: " if fold is not None else ""
        self.total = 0
        self.every = 0
        self.start_step = 0
        self.start_time = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total = total_steps(trainer)
        self.start_step = trainer.global_step
        self.start_time = time.monotonic()
        every = self.every_n_steps if self.every_n_steps is not None else max(1, self.total // DEFAULT_LINES)
        self.every = every
        if trainer.is_global_zero:
            resumed = f", resuming at step {self.start_step}" if self.start_step else ""
            log.info("%straining %d steps%s", self.prefix, self.total, resumed)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        self.total = total_steps(trainer)  # a weak stage 1 rerun (model.dark_restarts) lengthens the fit
        if not trainer.is_global_zero or not self.every or not (step % self.every == 0 or step == self.total):
            return
        log.info("%s%s", self.prefix, self.line(step, stage_name(pl_module, step - 1)))

    def line(self, step: int, stage: str | None) -> str:
        """``step 200/2250 (9%), stage decision, 3m12s elapsed, ETA 32m``."""
        elapsed = time.monotonic() - self.start_time
        done = step - self.start_step
        parts = [f"step {step}/{self.total}" + (f" ({100 * step // self.total}%)" if self.total else "")]
        if stage:
            parts.append(f"stage {stage}")
        parts.append(f"{duration(elapsed)} elapsed")
        if self.total and done > 0:
            parts.append(f"ETA {duration(elapsed / done * max(self.total - step, 0))}")
        return ", ".join(parts)
