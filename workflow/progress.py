"""Progress lines that read well in a log file: ``step 200/2250 (9%) stage decision, 3m12s elapsed, ETA 32m``.

The CPU presets switch Lightning's progress bar off (a bar redrawn with carriage returns is noise in a log file);
:class:`ProgressLog` keeps something moving: the step count the fold will run at its start, then a line every
``every_n_steps`` steps (about 20 lines per fold by default) and at the last step, through the run's logger (so
also into Hydra's ``<run dir>/train.log``). The test phase (minutes on a CPU for a few hundred images) gets its
batch count at its start, then up to :data:`TEST_LINES` lines with an ETA, at least :data:`TEST_LINE_GAP_S` apart,
and its last batch.

It also keeps a fold's training seconds in its checkpoints, so that a fold resumed from one (``ckpt_path=``) knows
the time spent before: written to ``<fold dir>/resumed.json`` and added to the run's and the pooled wall time
(:func:`seconds_before_resume`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)

#: lines per fold when ``every_n_steps`` is not given
DEFAULT_LINES = 20
#: lines per test phase
TEST_LINES = 10
#: seconds at least between two test-phase lines (a test phase of seconds gets its start and end line only)
TEST_LINE_GAP_S = 10.0
#: a line at least this often (seconds), whatever ``every_n_steps`` says: a slow CPU is not silent for long
MAX_SILENCE_S = 120.0
#: in a resumed fold's folder: the step it resumed at and the training seconds before
RESUMED_FILE = "resumed.json"


def seconds_before_resume(fold_dir: str | Path) -> float:
    """The training seconds a fold spent before the run that resumed it (0 for a fold trained in one go)."""
    path = Path(fold_dir) / RESUMED_FILE
    return float(json.loads(path.read_text())["trained_before_s"]) if path.is_file() else 0.0


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


def test_batches(trainer: L.Trainer) -> int:
    """The batches of this test phase over all its loaders (0 where a loader's length is unknown)."""
    counts = trainer.num_test_batches
    total = sum(counts) if isinstance(counts, (list, tuple)) else counts
    return int(total) if total != float("inf") else 0


def eta_line(done: int, total: int, elapsed: float, what: str, stage: str | None = None, start: int = 0) -> str:
    """``<what> 200/2250 (9%)[, stage <stage>], 3m12s elapsed, ETA 32m``: ``done`` of ``total``, ``elapsed`` s
    since ``start`` (the ETA from the pace since then)."""
    parts = [f"{what} {done}/{total}" + (f" ({100 * done // total}%)" if total else "")]
    if stage:
        parts.append(f"stage {stage}")
    parts.append(f"{duration(elapsed)} elapsed")
    if total and done > start:
        parts.append(f"ETA {duration(elapsed / (done - start) * max(total - done, 0))}")
    return ", ".join(parts)


def stage_name(pl_module: L.LightningModule, step: int) -> str | None:
    """The weak method's stage at ``step`` (its :class:`~lightning_modules.weak.stages.StagePlan`), else None."""
    plan = getattr(pl_module, "plan", None)
    try:
        return str(plan.locate(step)[1].name)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


class ProgressLog(L.Callback):
    """Log the fold's step count when training starts, then step, stage, elapsed time and ETA every
    ``every_n_steps`` steps (``None``: about :data:`DEFAULT_LINES` lines per fold; 0: only the start line), and
    after :data:`MAX_SILENCE_S` seconds without a line."""

    def __init__(self, every_n_steps: int | None = None, fold: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"progress_every must be >= 0 or null, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.prefix = f"fold {fold}: " if fold is not None else ""
        self.total = 0
        self.every = 0
        self.start_step = 0
        self.start_time: float | None = None
        self.last_line = 0.0
        self.before_s = 0.0  # training seconds of the runs before a resume (from the checkpoint)
        self.test_total = 0
        self.test_done = 0
        self.test_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total = total_steps(trainer)
        self.start_step = trainer.global_step
        self.start_time = self.last_line = time.monotonic()
        every = self.every_n_steps if self.every_n_steps is not None else max(1, self.total // DEFAULT_LINES)
        self.every = every
        if trainer.is_global_zero:
            resumed = f", resuming at step {self.start_step}" if self.start_step else ""
            log.info("%straining %d steps%s", self.prefix, self.total, resumed)
            path = Path(trainer.default_root_dir) / RESUMED_FILE
            path.unlink(missing_ok=True)
            if self.start_step:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"resumed_at_step": self.start_step, "trained_before_s": self.before_s}))

    def trained_s(self) -> float:
        """Training seconds of this fold so far, those before a resume included."""
        return self.before_s + (time.monotonic() - self.start_time if self.start_time is not None else 0.0)

    def state_dict(self) -> dict[str, float]:
        return {"trained_s": self.trained_s()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.before_s = float(state_dict.get("trained_s", 0.0))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        self.total = total_steps(trainer)  # a weak stage 1 rerun (model.dark_restarts) lengthens the fit
        if not trainer.is_global_zero or not self.every:
            return
        if step % self.every == 0 or step == self.total or time.monotonic() - self.last_line >= MAX_SILENCE_S:
            self.last_line = time.monotonic()
            log.info("%s%s", self.prefix, self.line(step, stage_name(pl_module, step - 1)))

    def line(self, step: int, stage: str | None) -> str:
        """``step 200/2250 (9%), stage decision, 3m12s elapsed, ETA 32m``."""
        elapsed = time.monotonic() - self.start_time if self.start_time is not None else 0.0
        return eta_line(step, self.total, elapsed, "step", stage, self.start_step)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Also where no training ran in this process (``train=false``, a resume of a finished fit)."""
        self.test_total, self.test_done = test_batches(trainer), 0
        self.test_start = self.last_line = time.monotonic()
        if trainer.is_global_zero:
            log.info("%stesting %d batches", self.prefix, self.test_total)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self.test_done += 1
        if not trainer.is_global_zero or self.every_n_steps == 0:  # 0: start lines only
            return
        every = max(1, self.test_total // TEST_LINES)
        now = time.monotonic()
        due = self.test_done % every == 0 and now - self.last_line >= TEST_LINE_GAP_S
        if due or self.test_done == self.test_total or now - self.last_line >= MAX_SILENCE_S:
            self.last_line = now
            log.info("%s%s", self.prefix, eta_line(self.test_done, self.test_total, now - self.test_start,
                                                     "testing batch"))
