"""Pick a setting among candidate runs by their validation figures only, and record the pick.

    python benchmarks/select_on_validation.py weak_kolektor_cpu \
        benchmarks/results/probes/weak_kolektor_cpu_val_drop.json \
        benchmarks/results/probes/weak_kolektor_cpu_val_nodrop.json ...

Each candidate is a ``benchmarks/run.py`` result of a run with ``data.val_fraction`` (the held-out part of the
training folds). The rule, fixed before the candidates ran: the highest validation headline (mean over the
candidate's folds, at the last validation: AP for the detection methods, ACC for clustering), ties (within ``--tie``)
broken by the lower validation log loss (detection) or the higher validation NMI (clustering); with ``--prefer NAME``
a tie goes to that candidate instead (a rule written before the runs that keeps a change unless it costs more than
the tie, e.g. a safeguard the validation images may never exercise). No test figure is read. The record,
``benchmarks/results/probes/selection_<name>.json``, lists each candidate's validation figures and the overrides that
set it apart; the pick is then run on every fold with ``--selection validation``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow.run_info import git_commit, write_result  # noqa: E402

#: validation headlines this close count as tied
TIE = 1e-6
#: each method's validation headline (maximised), in order of precedence: (its tie-break, whether lower is better)
TIE_BREAKS = {"ap": ("log_loss", True), "acc": ("nmi", False)}
RULE = ("highest validation {headline} (mean over the candidate's folds, last validation); {preferred}ties within "
        "{tie} broken by the {direction} validation {tie_break}; no test figure read")


def validation_figures(result: dict[str, Any]) -> dict[str, float]:
    """The run's last validation figures (``ap``, ``log_loss``, ``false_calls`` for detection; ``acc``, ``nmi``
    for clustering), the mean over its folds (false calls: the sum). Runs before the fold results kept them
    (``val_ap``...) carry a ``validation`` block written from the run's csv log and last checkpoint
    (``ap_by_step``, ``log_loss_final``)."""
    folds = [f for f in result["metrics"]["folds"] if any(k.startswith("val_") for k in f)]
    if folds:
        names = sorted({k[4:] for f in folds for k in f if k.startswith("val_") and k != "val_step"})
        shared = [k for k in names if all(f"val_{k}" in f for f in folds)]
        return {k: (sum if k == "false_calls" else statistics.fmean)(f[f"val_{k}"] for f in folds) for k in shared}
    block = result.get("validation")
    if not block:
        raise ValueError(f"{result.get('name')}: no validation figures (was it run with data.val_fraction > 0 "
                         "and a validation check at the end of training?)")
    last_step = max(block["ap_by_step"], key=int)
    figures = {"ap": float(block["ap_by_step"][last_step]), "log_loss": float(block["log_loss_final"])}
    if "false_calls_final" in block:
        figures["false_calls"] = block["false_calls_final"]
    return figures


def headline(figures: Sequence[dict[str, float]]) -> str:
    """The validation figure the candidates are ranked by (the first of :data:`TIE_BREAKS` they all have)."""
    for name in TIE_BREAKS:
        if all(name in f for f in figures):
            return name
    raise ValueError(f"the candidates share no validation headline ({', '.join(TIE_BREAKS)}): {figures}")


def pick(figures: Sequence[dict[str, float]], tie: float = TIE, prefer: int | None = None) -> int:
    """The index of the chosen candidate: the highest :func:`headline` figure; among those within ``tie`` of it,
    ``prefer`` if it is one of them, else the best tie-break figure (then the first listed)."""
    name = headline(figures)
    tie_break, lower = TIE_BREAKS[name]
    best = max(f[name] for f in figures)
    tied = [i for i, f in enumerate(figures) if f[name] >= best - tie]
    if prefer in tied:
        return prefer
    return min(tied, key=lambda i: figures[i][tie_break] if lower else -figures[i][tie_break])


def rule(figures: Sequence[dict[str, float]], tie: float = TIE, prefer: str | None = None) -> str:
    name = headline(figures)
    tie_break, lower = TIE_BREAKS[name]
    preferred = "" if prefer is None else f"ties within {tie} go to {prefer}, other "
    return RULE.format(headline=name.upper(), preferred=preferred, tie=tie, direction="lower" if lower else "higher",
                       tie_break=tie_break.replace("_", " "))


def distinguishing_overrides(commands: Sequence[str]) -> list[list[str]]:
    """Per command, the arguments not shared by every command (what sets each candidate apart)."""
    tokens = [shlex.split(c) for c in commands]
    common = set.intersection(*(set(t) for t in tokens))
    return [[a for a in t if a not in common] for t in tokens]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", help="what is being chosen (the record is selection_<name>.json)")
    parser.add_argument("candidates", nargs="+", type=Path, help="benchmarks/run.py result JSONs")
    parser.add_argument("--tie", type=float, default=TIE, help="validation headlines this close count as tied")
    parser.add_argument("--prefer", help="the candidate (its result name) that wins ties, fixed before the runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "probes")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = [json.loads(p.read_text()) for p in args.candidates]
    figures = [validation_figures(r) for r in results]
    names = [r["name"] for r in results]
    if args.prefer is not None and args.prefer not in names:
        raise SystemExit(f"--prefer {args.prefer}: not among the candidates {names}")
    chosen = pick(figures, args.tie, names.index(args.prefer) if args.prefer else None)
    apart = distinguishing_overrides([r["command"] for r in results])
    command = " ".join(["python benchmarks/select_on_validation.py", args.name, *map(str, args.candidates)]
                       + ([f"--tie {args.tie}"] if args.tie != TIE else [])
                       + ([f"--prefer {args.prefer}"] if args.prefer else []))
    record = write_result(
        args.out, f"selection_{args.name}", command, git_commit(ROOT), time.perf_counter() - start,
        {"pick_validation": figures[chosen]}, selection="validation",
        method=sorted({r.get("method", "unknown") for r in results}), rule=rule(figures, args.tie, args.prefer),
        candidates=[{"name": r["name"], "overrides": o, "commit": r.get("commit"), "device": r.get("device"),
                     "validation": f} for r, o, f in zip(results, apart, figures, strict=True)],
        pick=results[chosen]["name"], pick_overrides=apart[chosen])
    print(json.dumps({k: record[k] for k in ("pick", "pick_overrides")}
                     | {"validation": {c["name"]: c["validation"] for c in record["candidates"]}}, indent=2))


if __name__ == "__main__":
    main()
