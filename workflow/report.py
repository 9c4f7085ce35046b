"""The cross-validation report: a table per fold and pooled, printed and written as CSV and JSON."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path


def fmt(value: object) -> str:
    """A table cell: floats to 4 decimals (``nan`` kept), anything else as text."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def report_rows(folds: Sequence[Mapping], pooled: Mapping) -> list[dict]:
    """One row per fold and one ``pooled`` row, scalar metrics only."""
    rows = [{"fold": str(f["fold"]), **{k: v for k, v in f["metrics"].items() if isinstance(v, int | float)}}
            for f in folds]
    rows.append({"fold": "pooled", **{k: v for k, v in pooled.items() if isinstance(v, int | float)}})
    return rows


def cell(row: Mapping, column: str) -> object:
    """``row[column]``; a pooled row that averages a metric over folds holds it as ``<column>_mean_over_folds``."""
    return row.get(column, row.get(f"{column}_mean_over_folds", ""))


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(cell(r, c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out_dir: str | Path, folds: Sequence[Mapping], pooled: Mapping, columns: Sequence[str],
                 extra: Mapping | None = None) -> str:
    """Write ``metrics.json`` (folds, pooled, extra) and ``metrics.csv``; return the markdown table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = report_rows(folds, pooled)
    payload = {"folds": [{"fold": f["fold"], **f["metrics"]} for f in folds], "pooled": dict(pooled),
               **(extra or {})}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    keys = ["fold"] + sorted({k for r in rows for k in r} - {"fold"})
    with open(out_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    # one fold: its row is the pooled row; show it once (labelled both), not the same numbers twice
    shown = rows if len(folds) != 1 else [{**rows[0], **rows[-1], "fold": f"{folds[0]['fold']} (= pooled)"}]
    table = markdown_table(shown, ["fold", *columns])
    (out_dir / "metrics.md").write_text(table + "\n")
    return table
