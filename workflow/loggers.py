"""Loggers live for a whole job: one experiment (e.g. one W&B run) holds every fold, each fold's
metrics under its own prefix (``fold0-train/loss``), since each fold's step counter restarts at 0.

A W&B logger gets what its config leaves ``null`` filled in here: the mode (:mod:`workflow.wandb_mode`:
offline at once without an API key or network), the group (one per sweep), the run name (the job) and
the resolved Hydra config as the run's config. :func:`finish` closes the run at job end and says how to
upload an offline one (``wandb sync <folder>``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workflow.wandb_mode import OFFLINE_MODES, decide_wandb_mode

log = logging.getLogger(__name__)


def is_wandb(logger_cfg: DictConfig) -> bool:
    """Whether a logger config builds a ``WandbLogger``."""
    return str(logger_cfg.get("_target_", "")).endswith("WandbLogger")


def run_identity(cfg: DictConfig) -> tuple[str, str | None]:
    """(group, name) of the job's W&B run: in a multirun ``<task_name>-<sweep folder>`` and
    ``<task_name>-<job number>``; in a single run ``<task_name>`` and ``<task_name>-<run folder>``."""
    task = str(cfg.get("task_name", "train"))
    if not HydraConfig.initialized():
        return task, None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return f"{task}-{Path(hydra_cfg.sweep.dir).name}", f"{task}-{hydra_cfg.job.num}"
    return task, f"{task}-{Path(hydra_cfg.runtime.output_dir).name}"


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The job's config as plain containers, resolved (unresolved where a value cannot be, e.g. outside Hydra)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException:
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def wandb_arguments(cfg: DictConfig, logger_cfg: DictConfig) -> dict[str, Any]:
    """The ``WandbLogger`` arguments that ``logger_cfg`` leaves ``null`` (or out): mode, group, name, config."""
    extra: dict[str, Any] = {}
    if logger_cfg.get("mode") is None and not logger_cfg.get("offline", False):
        decision = decide_wandb_mode()
        extra["mode"] = decision.mode
        log.info("W&B mode %s (%s)", decision.mode, decision.reason)
    group, name = run_identity(cfg)
    if logger_cfg.get("group") is None:
        extra["group"] = group
    if logger_cfg.get("name") is None and name is not None:
        extra["name"] = name
    if logger_cfg.get("config") is None:
        extra["config"] = resolved_config(cfg)
    return extra


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Every configured logger of ``cfg.logger`` (a dict of configs; ``null`` entries are skipped)."""
    loggers = []
    for c in (cfg.get("logger") or {}).values():
        if c is None or "_target_" not in c:
            continue
        extra = wandb_arguments(cfg, c) if is_wandb(c) else {}
        # through a partial: `config`, one of the W&B arguments, is also instantiate()'s first parameter
        loggers.append(instantiate(c, _convert_="all", _partial_=True)(**extra))
    return loggers


def set_fold(loggers: Iterable[Logger], fold: int) -> None:
    """Prefix the following metrics with ``fold<k>``. Lightning's loggers keep the prefix they were built
    with in ``_prefix`` (CSV, TensorBoard, W&B, MLflow alike) and add it in ``log_metrics``."""
    for logger in loggers:
        if hasattr(logger, "_prefix"):
            logger._prefix = f"fold{fold}"


def offline_run_dir(logger: Logger) -> Path | None:
    """The folder of an offline W&B run started by ``logger`` (what ``wandb sync`` takes), else ``None``."""
    run = getattr(logger, "_experiment", None)
    settings = getattr(run, "settings", None)
    if settings is None or getattr(settings, "mode", None) not in OFFLINE_MODES:
        return None
    sync_dir = getattr(settings, "sync_dir", None)
    return Path(sync_dir) if sync_dir else None


def finish(loggers: Iterable[Logger], status: str = "success") -> list[Path]:
    """Flush and close each logger at the end of a job (a multirun's next job opens a new W&B run).

    Returns the offline W&B run folders, each also logged with the ``wandb sync`` command that uploads it.
    """
    offline: list[Path] = []
    for logger in loggers:
        logger.finalize(status)
        experiment = getattr(logger, "_experiment", None)
        if experiment is None or not isinstance(logger, WandbLogger):
            continue
        run_dir = offline_run_dir(logger)
        experiment.finish(exit_code=0 if status == "success" else 1)
        if run_dir is not None:
            offline.append(run_dir)
            log.info("W&B run saved offline in %s; upload it with: wandb sync %s", run_dir, run_dir)
    return offline
