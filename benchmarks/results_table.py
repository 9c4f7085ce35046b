"""Print the README's results table from ``benchmarks/results/*.json`` (figures are never typed in)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.report import fmt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = {
    "weak": ["ap", "false_calls", "false_calls_fixed", "fp_at_full_recall", "ap_raw", "fp_at_full_recall_raw"],
    "cluster": ["acc", "nmi", "mdr", "fdr", "eacc"],
}


def main() -> None:
    rows = ["| result | pooled | per fold | wall | device | commit | date |", "|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        metrics = r["metrics"]
        if "pooled" in metrics:
            kind = "weak" if "ap" in metrics["pooled"] else "cluster"
            keys = [k for k in KEYS[kind] if k in metrics["pooled"]]
            pooled = ", ".join(f"{k} {fmt(metrics['pooled'][k])}" for k in keys)
            folds = "; ".join(f"{k} " + "/".join(fmt(f[k]) for f in metrics["folds"]) for k in keys[:2])
        else:
            pooled = ", ".join(f"{k} {fmt(v)}" for k, v in metrics.items() if isinstance(v, int | float))
            folds = ""
        rows.append(f"| `{path.name}` | {pooled} | {folds} | {r['wall_s']:.0f} s | {r['device']} | "
                    f"{r['commit'][:12]} | {r['date'][:10]} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
