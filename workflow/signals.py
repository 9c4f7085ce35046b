"""SIGTERM mid-training (``kill``, ``timeout``, a Slurm preemption): save ``last.ckpt``, say how to resume.

Lightning catches SIGTERM and stops the loop with ``SIGTERMException``, a ``SystemExit`` with code 0: the job
looked like a success. :class:`CheckpointOnSigterm` saves the fold's ``last.ckpt`` at that point and records
where (:data:`INTERRUPTION`); :func:`workflow.failure.reported_failures` then prints the resume command and exits
with 143 (128 + SIGTERM). Under Slurm, Lightning's ``SLURMEnvironment(auto_requeue=True)`` requeues on the
``--signal`` it is sent (SIGUSR1); a requeued job starts a new run folder, so resume with the printed command.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

#: the last interruption in this process: ``{"fold": k, "checkpoint": Path, "step": s, "later_folds": [...]}``
INTERRUPTION: dict = {}


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where the fold's ``last.ckpt`` goes: the ``save_last`` checkpoint callback's folder, else
    ``<fold dir>/checkpoints``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


class CheckpointOnSigterm(L.Callback):
    """On SIGTERM during ``fit``, save ``last.ckpt`` at the step reached (after that step, so resuming with
    ``ckpt_path=`` continues from there); during ``test`` point at the ``last.ckpt`` written when training ended."""

    def __init__(self, fold: int, later_folds: list[int] | None = None) -> None:
        self.fold = fold
        self.later_folds = list(later_folds or [])

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        path = checkpoint_dir(trainer) / "last.ckpt"
        if trainer.state.fn == TrainerFn.FITTING:
            trainer.save_checkpoint(path)  # the full training state (optimizer, loops): resumable
            log.warning("SIGTERM at step %d: saved %s", trainer.global_step, path)
        INTERRUPTION.clear()
        INTERRUPTION.update(fold=self.fold, checkpoint=path if path.is_file() else None, step=trainer.global_step,
                            later_folds=self.later_folds)
