"""A Hydra callback that writes the sweep summary (:mod:`workflow.sweep_summary`) when a multirun ends.

Registered in ``conf/hydra/default.yaml`` under ``hydra.callbacks.sweep_summary``; it runs on the machine that
started the sweep after every job returned, whatever the sweeper (basic, Optuna) or launcher (local, Slurm).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from workflow.sweep_summary import write_summary

log = logging.getLogger(__name__)


class SweepSummaryCallback(Callback):
    """``on_multirun_end``: ``sweep_summary.csv``/``.md``/``.png`` in ``hydra.sweep.dir``.

    Args:
        x: the plots' x axis (a swept key); None chooses a numeric swept key.
        metrics: the metrics plotted; None: the jobs' first two ``report_columns``.
        labels: legend text per ``key=value`` or per key.
        enabled: False writes nothing.

    A failure here is logged, never raised: the jobs' results are already on disk, and
    ``python -m workflow.sweep_summary <sweep dir>`` rebuilds the summary.
    """

    def __init__(self, x: str | None = None, metrics: Sequence[str] | None = None,
                 labels: Mapping[str, str] | None = None, enabled: bool = True) -> None:
        self.x = x
        self.metrics = [str(m) for m in metrics] if metrics else None
        self.labels = _plain(labels)
        self.enabled = enabled

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summary = write_summary(sweep_dir, x=self.x, metrics=self.metrics, labels=self.labels)
        except Exception:  # the sweep itself succeeded; say why there is no summary and carry on
            log.exception("sweep summary of %s failed; rebuild with: python -m workflow.sweep_summary %s",
                          sweep_dir, sweep_dir)
            return
        log.info("sweep summary (%d settings): %s", len(summary.rows), summary.md_path)


def _plain(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if isinstance(labels, DictConfig):
        labels = OmegaConf.to_container(labels, resolve=True)
    return {str(k): str(v) for k, v in labels.items()}
