"""One summary of a Hydra sweep: mean and std over folds per setting, as a table (CSV, markdown) and plots.

A job is a folder holding ``.hydra/overrides.yaml`` and ``metrics.json`` (written by ``train.py``). The
*setting* of a job is the value of each override key that varies across the sweep's jobs (a key missing from
some jobs varies too); jobs of the same setting are pooled. Each metric's mean and sample standard deviation
(``n - 1``; ``nan`` for a single fold) are taken over the per-fold values in ``metrics.json`` ``folds``.

Written into the sweep folder: ``sweep_summary.csv`` (every numeric fold metric, full precision),
``sweep_summary.md`` (the jobs' ``report_columns`` as ``mean ± std``) and ``sweep_summary.png``
(see :mod:`workflow.sweep_plots`). Called by :class:`workflow.sweep_callback.SweepSummaryCallback` at the
end of a multirun, or by hand::

    python -m workflow.sweep_summary outputs/weak_kolektor/multiruns/2026-01-01_12-00-00 [--x KEY]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from workflow.outcome import job_outcome
from workflow.report import fmt

log = logging.getLogger(__name__)

SUMMARY_STEM = "sweep_summary"
_MISSING = "(default)"


@dataclass(frozen=True)
class SweepJob:
    """One finished job of a sweep: its folder, overrides (key -> value text) and per-fold metrics."""

    directory: Path
    overrides: dict[str, str]
    folds: list[dict[str, float]]
    report_columns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SettingRow:
    """One setting of the swept keys: its jobs and each metric's mean and std over all their folds."""

    setting: dict[str, str | None]
    jobs: list[str]
    n_folds: int
    mean: dict[str, float]
    std: dict[str, float]


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`write_summary` wrote, and the table it wrote."""

    keys: list[str]
    metrics: list[str]
    rows: list[SettingRow]
    csv_path: Path
    md_path: Path
    plot_path: Path | None


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """``["a.b=1", "+c=[x,y]", "~d"]`` -> ``{"a.b": "1", "c": "[x,y]", "d": "~"}`` (value text kept as given)."""
    parsed: dict[str, str] = {}
    for item in overrides:
        if item.startswith("~"):
            key, _, value = item[1:].partition("=")
            parsed[key] = "~" + value
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"not an override: {item!r}")
        parsed[key.lstrip("+")] = value
    return parsed


def _numeric_metrics(record: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k != "fold" and isinstance(v, int | float) and not isinstance(v, bool)}


def _natural(text: str | None) -> tuple:
    """Sort key: missing first, then numbers by value, then text."""
    if text is None:
        return (0, 0.0, "")
    try:
        return (1, float(text), "")
    except ValueError:
        return (2, 0.0, text)


def load_job(directory: Path) -> SweepJob | None:
    """The job in ``directory``, or None where it has no ``metrics.json`` (it failed or has not finished)."""
    metrics_path = directory / "metrics.json"
    if not metrics_path.is_file():
        return None
    overrides = yaml.safe_load((directory / ".hydra" / "overrides.yaml").read_text()) or []
    report = json.loads(metrics_path.read_text())
    columns: list[str] = []
    config_path = directory / ".hydra" / "config.yaml"
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text()) or {}
        columns = [str(c) for c in config.get("report_columns") or []]
    return SweepJob(directory=directory, overrides=parse_overrides([str(o) for o in overrides]),
                    folds=[_numeric_metrics(f) for f in report.get("folds", [])], report_columns=columns)


def load_jobs(sweep_dir: str | Path) -> list[SweepJob]:
    """Every finished job under ``sweep_dir`` (any depth), in job-number order; unfinished ones are logged."""
    sweep_dir = Path(sweep_dir)
    directories = sorted({p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"},
                         key=lambda d: _natural(str(d.relative_to(sweep_dir))))
    jobs = []
    for directory in directories:
        job = load_job(directory)
        if job is None:
            log.warning("sweep summary: %s has no metrics.json (%s); left out", directory, job_outcome(directory))
        else:
            jobs.append(job)
    return jobs


def varying_keys(jobs: Sequence[SweepJob]) -> list[str]:
    """Override keys whose value differs between jobs, in the order they first appear."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def summarize(jobs: Sequence[SweepJob], keys: Sequence[str]) -> tuple[list[SettingRow], list[str]]:
    """One row per setting of ``keys`` (sorted by value) and the metric names, in first-seen order."""
    metrics: list[str] = []
    groups: dict[tuple, list[SweepJob]] = {}
    for job in jobs:
        for fold in job.folds:
            metrics += [m for m in fold if m not in metrics]
        groups.setdefault(tuple(job.overrides.get(k) for k in keys), []).append(job)
    rows = []
    for values in sorted(groups, key=lambda vs: tuple(_natural(v) for v in vs)):
        members = groups[values]
        folds = [f for job in members for f in job.folds]
        mean, std = {}, {}
        for m in metrics:
            sample = [f[m] for f in folds if m in f]
            mean[m] = statistics.fmean(sample) if sample else math.nan
            std[m] = statistics.stdev(sample) if len(sample) > 1 else math.nan
        rows.append(SettingRow(setting=dict(zip(keys, values, strict=True)), jobs=[j.directory.name for j in members],
                               n_folds=len(folds), mean=mean, std=std))
    return rows, metrics


def setting_label(key: str, value: str | None, labels: Mapping[str, str] | None = None) -> str:
    """Legend text of one key's value: ``labels["key=value"]``, else ``<labels[key]>=value``, else ``key=value``."""
    labels = labels or {}
    text = _MISSING if value is None else value
    for name, label in labels.items():  # "model.rotate=true" matches the value "True" the sweeper wrote
        name_key, sep, name_value = str(name).partition("=")
        if sep and name_key == key and value is not None and _canonical(name_value) == _canonical(value):
            return str(label)
    return f"{labels.get(key, key)}={text}"


def _canonical(value: str) -> str:
    """Override value text compared as YAML (``false`` == ``False``, ``0.10`` == ``0.1``, ``[a, b]`` == ``[a,b]``)."""
    try:
        return repr(yaml.safe_load(value))
    except yaml.YAMLError:
        return value


def _short(value: str | None) -> str:
    """A setting value for the markdown table: long decimals (Optuna's) to 4 significant digits."""
    if value is None:
        return _MISSING
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 8 else f"{number:.4g}"


def write_table(rows: Sequence[SettingRow], keys: Sequence[str], metrics: Sequence[str],
                md_metrics: Sequence[str], out_stem: Path) -> tuple[Path, Path]:
    """``<out_stem>.csv`` (every metric's ``_mean`` and ``_std``) and ``<out_stem>.md`` (``md_metrics``)."""
    csv_path, md_path = out_stem.with_suffix(".csv"), out_stem.with_suffix(".md")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*keys, "jobs", "n_folds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
        for r in rows:
            writer.writerow([*("" if r.setting[k] is None else r.setting[k] for k in keys), " ".join(r.jobs),
                             r.n_folds, *(repr(v[m]) for m in metrics for v in (r.mean, r.std))])
    header = [*(keys or ["setting"]), "jobs", "folds", *md_metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        setting = [_short(r.setting[k]) for k in keys] or ["all jobs"]
        cells = [f"{fmt(r.mean[m])} ± {fmt(r.std[m])}" for m in md_metrics]
        lines.append("| " + " | ".join([*setting, " ".join(r.jobs), str(r.n_folds), *cells]) + " |")
    md_path.write_text("Mean ± standard deviation over folds, per setting of the swept keys.\n\n"
                       + "\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


def write_summary(sweep_dir: str | Path, x: str | None = None, metrics: Sequence[str] | None = None,
                  labels: Mapping[str, str] | None = None, plot: bool = True) -> SweepSummary:
    """Summarize the sweep in ``sweep_dir``: the table (CSV, markdown) and, with ``plot``, the figure.

    Args:
        sweep_dir: the sweep folder (``hydra.sweep.dir``).
        x: the plots' x axis, a swept key; None chooses (see :func:`workflow.sweep_plots.choose_x`).
        metrics: the metrics plotted; None: the first two of the jobs' ``report_columns`` (all jobs', in order
            of first appearance) found in the folds.
        labels: legend text per ``key=value`` or per key (:func:`setting_label`).
        plot: also write ``sweep_summary.png``.
    """
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no finished job (.hydra/overrides.yaml + metrics.json) under {sweep_dir}")
    keys = varying_keys(jobs)
    rows, all_metrics = summarize(jobs, keys)
    # every job's report columns, in order of first appearance (a sweep may mix experiments)
    columns = list(dict.fromkeys(c for job in jobs for c in job.report_columns if c in all_metrics)) or all_metrics
    csv_path, md_path = write_table(rows, keys, all_metrics, columns, sweep_dir / SUMMARY_STEM)
    plot_path = None
    if plot:
        from workflow.sweep_plots import plot_summary  # matplotlib only when plotting

        unknown = [m for m in metrics or [] if m not in all_metrics]
        if unknown:
            raise ValueError(f"metrics {unknown} are in no job's folds; choose from {all_metrics}")
        plot_path = plot_summary(rows, keys, list(metrics or columns[:2]), sweep_dir / f"{SUMMARY_STEM}.png",
                                 x=x, labels=labels)
    log.info("sweep summary of %d jobs, %d settings: %s", len(jobs), len(rows), csv_path)
    return SweepSummary(keys=keys, metrics=all_metrics, rows=rows, csv_path=csv_path, md_path=md_path,
                        plot_path=plot_path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="(Re)build the summary of a Hydra sweep folder.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--x", default=None, help="the plots' x axis, a swept key (default: chosen)")
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics to plot (default: first two columns)")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE:TEXT",
                        help="legend text for a swept key=value (or KEY:TEXT for a key); repeatable")
    parser.add_argument("--no-plot", action="store_true", help="write the table only")
    args = parser.parse_args(argv)
    labels = dict(item.rsplit(":", 1) for item in args.label)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = write_summary(args.sweep_dir, x=args.x, metrics=args.metrics, labels=labels, plot=not args.no_plot)
    print(summary.md_path.read_text(encoding="utf-8"), end="")
    for path in (summary.csv_path, summary.md_path, summary.plot_path):
        if path is not None:
            print(path)


if __name__ == "__main__":
    main()
