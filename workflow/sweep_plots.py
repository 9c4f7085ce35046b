"""The sweep summary's figure: one panel per metric, mean ± std over folds against a swept key.

With a numeric x key (e.g. ``data.num_defective``: Xu et al. 2020, Figures 5 and 7) each panel has one line
per setting of the other swept keys (frozen or not, rotation or not, with or without LNet training); with
none, one bar per setting. Drawn with matplotlib's Agg canvas (no display, no global backend change).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workflow.sweep_summary import SettingRow, setting_label

log = logging.getLogger(__name__)

MAX_LEGEND_ENTRIES = 12
MAX_TICKS = 12


def _as_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def numeric_keys(rows: Sequence[SettingRow], keys: Sequence[str]) -> list[str]:
    """The swept keys whose every value is a number."""
    return [k for k in keys if all(_as_float(r.setting[k]) is not None for r in rows)]


def choose_x(rows: Sequence[SettingRow], keys: Sequence[str], x: str | None = None) -> str | None:
    """The x axis: ``x`` when it is a numeric swept key, else the numeric swept key with the most distinct values
    (the first such on ties), else None (a bar chart). An ``x`` that does not fit this sweep (e.g. a preset's
    ``data.num_defective`` when the command line fixed it) is logged and replaced by that choice."""
    numeric = numeric_keys(rows, keys)
    if x is not None:
        if x in numeric:
            return x
        why = "does not vary in this sweep" if x not in keys else "has values that are not numbers"
        log.warning("sweep plot: x=%s %s; choosing from the numeric swept keys %s", x, why, numeric)
    if not numeric:
        return None
    return max(numeric, key=lambda k: (len({r.setting[k] for r in rows}), -numeric.index(k)))


def _yerr(values: Sequence[float]) -> list[float]:
    return [0.0 if math.isnan(v) else v for v in values]


def _draw_lines(ax, rows: Sequence[SettingRow], keys: Sequence[str], x: str, metric: str,
                labels: Mapping[str, str] | None) -> None:
    others = [k for k in keys if k != x]
    series: dict[tuple, list[SettingRow]] = {}
    for r in rows:
        series.setdefault(tuple(r.setting[k] for k in others), []).append(r)
    linestyle = "-"
    if all(len(members) == 1 for members in series.values()) and len(series) > 1:
        series = {(): list(rows)}  # no two settings share the other keys (e.g. Optuna): points, no lines
        others, linestyle = [], "none"
    for values, members in series.items():
        members = sorted(members, key=lambda r: _as_float(r.setting[x]))
        xs = [_as_float(r.setting[x]) for r in members]
        label = ", ".join(setting_label(k, v, labels) for k, v in zip(others, values, strict=True)) or None
        ax.errorbar(xs, [r.mean[metric] for r in members], yerr=_yerr([r.std[metric] for r in members]),
                    marker="o", capsize=3, linestyle=linestyle, label=label)
    xs = sorted({_as_float(r.setting[x]) for r in rows})
    if xs[0] > 0 and xs[-1] / xs[0] >= 100:
        ax.set_xscale("log")
    elif len(xs) <= MAX_TICKS and all(v.is_integer() for v in xs):
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{v:g}" for v in xs])
    ax.set_xlabel(str((labels or {}).get(x, x)))
    if others and 1 < len(series) <= MAX_LEGEND_ENTRIES:
        ax.legend(fontsize="small")


def _draw_bars(ax, rows: Sequence[SettingRow], keys: Sequence[str], metric: str,
               labels: Mapping[str, str] | None) -> None:
    if len(keys) == 1:  # the key on the axis, its values on the bars
        names = [setting_label(keys[0], r.setting[keys[0]], labels).removeprefix(f"{keys[0]}=") for r in rows]
        ax.set_xlabel(str((labels or {}).get(keys[0], keys[0])))
    else:
        names = ["\n".join(setting_label(k, r.setting[k], labels) for k in keys) or "all jobs" for r in rows]
    positions = list(range(len(rows)))
    ax.bar(positions, [r.mean[metric] for r in rows], yerr=_yerr([r.std[metric] for r in rows]), capsize=3)
    ax.set_xticks(positions)
    ax.set_xticklabels(names, rotation=30 if len(rows) > 3 else 0, ha="right" if len(rows) > 3 else "center",
                       fontsize="small")


def plot_summary(rows: Sequence[SettingRow], keys: Sequence[str], metrics: Sequence[str], path: str | Path,
                 x: str | None = None, labels: Mapping[str, str] | None = None) -> Path:
    """Write the figure to ``path`` (PNG): one panel per metric; x chosen by :func:`choose_x`."""
    path = Path(path)
    x = choose_x(rows, keys, x)
    fig = Figure(figsize=(4.8 * max(1, len(metrics)), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, max(1, len(metrics)), i + 1)
        if x is None:
            _draw_bars(ax, rows, keys, metric, labels)
        else:
            _draw_lines(ax, rows, keys, x, metric, labels)
        ax.set_title(metric)
        ax.set_ylabel(f"{metric} (mean ± std over folds)")
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path
