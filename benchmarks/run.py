"""Run a training command and record its result as ``benchmarks/results/<name>.json``.

    python benchmarks/run.py weak_kolektor_cpu experiment=weak_kolektor_cpu \
        data.archive=../shared/datasets/KolektorSDD.zip --selection fixed

The JSON holds the command, git commit, device, date, wall time, the method's registry name (``method``) and
the run's ``metrics.json`` (``metrics.pooled``, ``metrics.folds``, ``metrics.warnings``), copied from the run
folder, never typed in. A working tree with uncommitted changes is refused (the commit would not say what ran)
unless ``--allow-dirty``. ``--selection`` (required: only the person running it knows) records how the settings
were chosen. ``--pool-with RUN_DIR ...`` records the folds of earlier runs of the same setting pooled with this
run's (a benchmark run in parts; :mod:`workflow.pool_runs`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELECTIONS = ("test", "validation", "label_free", "fixed")
sys.path.insert(0, str(ROOT))

from lightning_modules.method import method_of  # noqa: E402
from workflow.pool_runs import pool_runs  # noqa: E402
from workflow.run_info import require_clean_tree, write_result  # noqa: E402


def run_method(run_dir: Path) -> str:
    """The registry name of the method a ``train.py`` run trained (from its resolved config)."""
    from omegaconf import OmegaConf

    return method_of(OmegaConf.load(run_dir / "config_resolved.yaml").model).name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run even with uncommitted changes (the result's commit then ends in -dirty)")
    parser.add_argument("--selection", required=True, choices=SELECTIONS,
                        help="how the settings were chosen: test (by looking at these test folds), validation (on data "
                             "held out of the training folds), label_free (a criterion reading no label), fixed (set "
                             "before this dataset was looked at)")
    parser.add_argument("--pool-with", nargs="+", default=[], metavar="RUN_DIR",
                        help="earlier run folders of the same setting (e.g. a run stopped after some folds) whose "
                             "finished folds are pooled with this run's (workflow/pool_runs.py)")
    args = parser.parse_args(argv)
    commit = require_clean_tree("benchmarks/run.py", args.allow_dirty, ROOT)
    run_dir = ROOT / "outputs" / "benchmarks" / f"{args.name}_{dt.datetime.now():%Y%m%d_%H%M%S}"
    command = [sys.executable, "train.py", *args.overrides, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    extra = {}
    if args.pool_with:  # the folds of earlier runs too; wall time: each pooled fold's, from its files
        earlier = [Path(d) if Path(d).is_absolute() else ROOT / d for d in args.pool_with]
        report = pool_runs([*earlier, run_dir], run_dir / "pooled")
        metrics = json.loads((run_dir / "pooled" / "metrics.json").read_text())
        wall = report["wall_s"]
        extra["pooled_runs"] = report["runs"]
        metrics["commit"] = "+".join(dict.fromkeys(str(r["commit"]) for r in report["runs"]))
    # packages and device now; the commit is the one the run started from (its metrics.json records it)
    result = write_result(ROOT / "benchmarks" / "results", args.name,
                          "python train.py " + " ".join(shlex.quote(o) for o in args.overrides),
                          metrics.get("commit", commit), wall,
                          {"pooled": metrics["pooled"], "folds": metrics["folds"],
                           "warnings": metrics.get("warnings", [])},
                          method=run_method(run_dir), run_dir=str(run_dir.relative_to(ROOT)),
                          selection=args.selection, **extra)
    print(json.dumps({k: result[k] for k in ("name", "wall_s", "device")} | {"pooled": metrics["pooled"]}, indent=2))


if __name__ == "__main__":
    main()
