"""Print the README's results table from ``benchmarks/results/*.json`` (figures are never typed in)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.method import method_class  # noqa: E402
from workflow.report import fmt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested ``metrics`` dict under dotted keys (``seconds.cluster_train_step.32-true``)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


def main() -> None:
    rows = ["| result | pooled | per fold | wall | device | commit | date |", "|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        metrics = r["metrics"]
        if "pooled" in metrics and r.get("method"):  # a train.py run: its method's metrics, headline first
            keys = [k for k in method_class(r["method"]).metric_names if k in metrics["pooled"]]
            pooled = ", ".join(f"{k} {fmt(metrics['pooled'][k])}" for k in keys)
            folds = "; ".join(f"{k} " + "/".join(fmt(f[k]) for f in metrics["folds"]) for k in keys[:2])
        else:
            pooled = ", ".join(f"{k} {fmt(v)}" for k, v in flatten(metrics).items())
            folds = ""
        rows.append(f"| `{path.name}` | {pooled} | {folds} | {r['wall_s']:.0f} s | {r['device']} | "
                    f"{r['commit'][:12]} | {r['date'][:10]} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
