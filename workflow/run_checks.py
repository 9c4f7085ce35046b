"""Checks of a run's settings before anything trains, and the per-fold callbacks that guard a run.

Each message names the setting (``folds``, ``data.num_folds``, ``model.num_clusters``) and what it needs.
"""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig

from workflow.errors import SettingError
from workflow.progress import ProgressLog
from workflow.signals import CheckpointOnSigterm


def check_run_args(cfg: DictConfig) -> None:
    """Refuse settings no run can use (:class:`SettingError` naming the setting)."""
    folds = list(cfg.get("folds") or [])
    num_folds = cfg.data.get("num_folds", 3)
    fixed_split = cfg.data.get("split_file") or cfg.data.get("test_groups")
    if num_folds is not None and int(num_folds) < (1 if fixed_split else 2):
        raise SettingError(f"data.num_folds={num_folds}: cross-validation needs at least 2 folds (one tests, "
                           "the others train); 1 only with a fixed train/test split (data.split_file)")
    if not folds:
        raise SettingError("folds=[] lists no fold to run: give at least one, e.g. folds=[0]")
    if num_folds is not None:
        outside = [f for f in folds if not 0 <= int(f) < int(num_folds)]
        if outside:
            raise SettingError(f"folds={folds}: {outside} outside 0..{int(num_folds) - 1} (data.num_folds="
                               f"{num_folds})")
    clusters = cfg.model.get("num_clusters")
    if clusters is not None and int(clusters) < 2:
        raise SettingError(f"model.num_clusters={clusters}: clustering needs at least 2 clusters")
    every = cfg.get("progress_every")
    if every is not None and int(every) < 0:
        raise SettingError(f"progress_every={every} must be >= 0 (0: only the start line) or null")


class MustTrain(L.Callback):
    """Fail a ``fit`` that made no training step although steps were due: Lightning only logs "No training
    batches" and the run would report the metrics of an untrained model (e.g. 8 training images, batch size 32
    with incomplete batches dropped)."""

    def __init__(self) -> None:
        self.start_step = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = trainer.max_steps < 0 or trainer.global_step < trainer.max_steps
        if trainer.global_step == self.start_step and due and not trainer.num_training_batches:
            datamodule = getattr(trainer, "datamodule", None)
            images = len(getattr(datamodule, "train_samples", None) or [])
            raise SettingError(
                f"no training batch: {images} training images give 0 complete batches, so fit made no step. "
                "Lower the training batch size (model.training_plan.batch_size) to at most "
                "the number of training images, or use more data")


def fold_guards(cfg: DictConfig, fold: int) -> list[L.Callback]:
    """The callbacks every fold gets: ``last.ckpt`` on SIGTERM, progress lines, no silent zero-step fit."""
    folds = [int(f) for f in cfg.get("folds") or []]
    later = folds[folds.index(fold) + 1:] if fold in folds else []
    return [CheckpointOnSigterm(fold, later), ProgressLog(cfg.get("progress_every"), fold), MustTrain()]
