"""Run a training command and record its result as ``benchmarks/results/<name>.json``.

    python benchmarks/run.py weak_kolektor_cpu experiment=weak_kolektor_cpu \
        data.archive=../shared/datasets/KolektorSDD.zip --selection fixed

The JSON holds the command, git commit, device, date, wall time, the method's registry name (``method``) and
the run's ``metrics.json`` (``metrics.pooled``, ``metrics.folds``, ``metrics.warnings``), copied from the run
folder, never typed in. A working tree with uncommitted changes is refused (the commit would not say what ran)
unless ``--allow-dirty``. ``--selection`` (required: only the person running it knows) records how the settings
were chosen. ``--pool-with RUN_DIR ...`` records the folds of earlier runs of the same setting pooled with this
run's (a benchmark run in parts; :mod:`workflow.pool_runs`); the setting is compared before anything trains.
``--from-run RUN_DIR`` records a ``train.py`` run that has already finished (its command from Hydra's record of its
overrides) instead of running one.
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

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "conf"
SELECTIONS = ("test", "validation", "label_free", "fixed")
sys.path.insert(0, str(ROOT))

from lightning_modules.method import method_of  # noqa: E402
from workflow.pool_runs import check_same_setting, pool_runs, run_config, run_overrides  # noqa: E402
from workflow.precision import register_resolvers  # noqa: E402
from workflow.progress import seconds_before_resume  # noqa: E402
from workflow.run_info import require_clean_tree, run_info_of, write_result  # noqa: E402


def run_method(run_dir: Path) -> str:
    """The registry name of the method a ``train.py`` run trained (from its resolved config)."""
    return method_of(OmegaConf.load(run_dir / "config_resolved.yaml").model).name


def planned_config(overrides: list[str]) -> DictConfig:
    """The config ``train.py`` will run with ``overrides`` (from :data:`ROOT`), resolved; what the data fills in when
    the run starts (class counts) is still null."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.root_dir={ROOT}", "paths.output_dir=/not-yet"])
    OmegaConf.resolve(cfg)
    return cfg


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
    parser.add_argument("--from-run", metavar="RUN_DIR",
                        help="record this finished train.py run (no overrides then) instead of running one")
    args = parser.parse_args(argv)
    earlier = [Path(d) if Path(d).is_absolute() else ROOT / d for d in args.pool_with]
    if args.from_run:
        if args.overrides:
            parser.error("--from-run records a finished run: its overrides are the run's own, give none")
        run_dir = Path(args.from_run) if Path(args.from_run).is_absolute() else ROOT / args.from_run
        commit, overrides = "", run_overrides(run_dir)
        info = run_info_of(run_dir)
        extra = {k: info[k] for k in ("device", "packages") if k in info}  # the run's machine, not this one
    else:
        commit = require_clean_tree("benchmarks/run.py", args.allow_dirty, ROOT)
        overrides = args.overrides
        planned = planned_config(overrides) if earlier else None
        for other in earlier:  # before hours of training: the runs to pool with must be of this setting
            check_same_setting(planned, run_config(other), f"{other} differs from this run", unset_matches=True)
        run_dir = ROOT / "outputs" / "benchmarks" / f"{args.name}_{dt.datetime.now():%Y%m%d_%H%M%S}"
        command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        # plus a resumed fold's training time in the run it resumed (workflow.progress)
        wall = time.perf_counter() - start + sum(seconds_before_resume(d) for d in run_dir.glob("fold*"))
        extra = {}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if args.pool_with or args.from_run:  # wall time: each pooled fold's, from its files
        report = pool_runs([*earlier, run_dir], run_dir / "pooled")
        metrics = json.loads((run_dir / "pooled" / "metrics.json").read_text())
        wall = report["wall_s"]
        if args.pool_with:
            extra["pooled_runs"] = report["runs"]
        metrics["commit"] = "+".join(dict.fromkeys(str(r["commit"]) for r in report["runs"]))
    shown_dir = run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir
    # packages and device: this machine (a recorded run: its own); the commit: the one the run started from
    result = write_result(ROOT / "benchmarks" / "results", args.name,
                          "python train.py " + " ".join(shlex.quote(o) for o in overrides),
                          metrics.get("commit", commit), wall,
                          {"pooled": metrics["pooled"], "folds": metrics["folds"],
                           "warnings": metrics.get("warnings", [])},
                          method=run_method(run_dir), run_dir=str(shown_dir),
                          selection=args.selection, **extra)
    print(json.dumps({k: result[k] for k in ("name", "wall_s", "device")} | {"pooled": metrics["pooled"]}, indent=2))


if __name__ == "__main__":
    main()
