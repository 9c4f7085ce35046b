"""Pool the folds of several ``train.py`` runs into one cross-validation report, as if one run had trained them all.

Folds run as separate jobs (one per GPU or Slurm task, ``python train.py -m 'folds=[0],[1],[2]'``),
or a long run stopped after some folds and the rest run later: each finished fold keeps its result in
``<run>/fold<k>/fold_result.pt`` (:class:`workflow.gathering.FoldResultWriter`), per-image scores included, so the
method's own :meth:`~lightning_modules.method.DefectMethod.pool` gives the same pooled metrics as one run of all the
folds (each fold is seeded by ``seed + fold`` alone, so a fold trains the same in either).

The runs must agree on everything but which folds they ran: every key of ``model``, ``data`` (but ``fold``),
``optimizer``, ``seed``, ``trainer`` (but console settings) and ``callbacks``; the differing keys are named. A fold
found twice is an error. Written into ``out``: ``metrics.json``, ``metrics.csv`` and ``metrics.md`` as ``train.py``
writes them, plus ``runs`` (each run's folder, command, commit, device, folds) and ``wall_s``: the sum of each
pooled fold's time, from its files' times (a run stopped mid-fold leaves no ``metrics.json`` to read its time
from), with the training time before a resume::

    python -m workflow.pool_runs outputs/pooled run_a run_b
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from lightning_modules.method import method_of
from workflow.errors import SettingError
from workflow.gathering import FOLD_RESULT_FILE, load_fold_result
from workflow.progress import seconds_before_resume
from workflow.report import write_report
from workflow.run_info import run_info_of
from workflow.run_warnings import fold_warnings

#: the config sections that must be the same in every pooled run
SHARED_KEYS = ("model", "data", "optimizer", "seed", "trainer", "callbacks")
#: settings inside them that change nothing in a fold's result: which fold, what the console shows, and whether
#: decoded images are kept in RAM (the same pixels either way)
IGNORED_KEYS = frozenset({"data.fold", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                          "trainer.log_every_n_steps", "data.cache", "data.cache_max_gib"})


def run_config(run_dir: Path) -> DictConfig:
    path = run_dir / "config_resolved.yaml"
    if not path.is_file():
        raise SettingError(f"{run_dir} is not a train.py run folder: {path.name} is missing")
    return OmegaConf.load(path)


def flat(value: Any, prefix: str) -> dict[str, Any]:
    """``value`` as ``{dotted key: leaf}`` (lists are leaves)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}").items()}
    return {prefix: value}


def shared_part(cfg: DictConfig) -> dict[str, Any]:
    """What must agree between pooled runs: the leaves of :data:`SHARED_KEYS`, less :data:`IGNORED_KEYS`."""
    leaves: dict[str, Any] = {}
    for key in SHARED_KEYS:
        node = cfg.get(key)
        leaves.update(flat(OmegaConf.to_container(node) if isinstance(node, DictConfig) else node, key))
    return {k: v for k, v in leaves.items() if k not in IGNORED_KEYS}


def check_same_setting(reference: DictConfig, cfg: DictConfig, what: str, unset_matches: bool = False) -> None:
    """Raise :class:`SettingError` (``what`` in ``{keys}``) where ``cfg`` and ``reference`` differ in a key of
    :func:`shared_part`. ``unset_matches``: a key ``cfg`` leaves null (filled from the data when the run starts, as
    the class counts are) matches anything: for checking a config before its run."""
    part, ref = shared_part(cfg), shared_part(reference)
    differing = sorted(k for k in part.keys() | ref.keys()
                       if part.get(k) != ref.get(k) and not (unset_matches and k in part and part[k] is None))
    if differing:
        raise SettingError(f"{what} in {differing}: only runs of one setting pool")


def run_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a ``train.py`` run, from Hydra's record of them (its output folder left out)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise SettingError(f"{run_dir} has no .hydra/overrides.yaml: not a train.py run folder")
    return [str(o) for o in yaml.safe_load(path.read_text()) or [] if not str(o).startswith("hydra.run.dir=")]


def run_command(run_dir: Path) -> str | None:
    """The ``train.py`` command of a run (:func:`run_overrides`); None where Hydra kept no record."""
    if not (run_dir / ".hydra" / "overrides.yaml").is_file():
        return None
    return " ".join(["python train.py", *(shlex.quote(o) for o in run_overrides(run_dir))])


def finished_folds(run_dir: Path) -> list[tuple[int, Path]]:
    """``(fold, fold folder)`` of every fold of ``run_dir`` whose test finished, by fold."""
    found = [(int(p.parent.name.removeprefix("fold")), p.parent) for p in run_dir.glob(f"fold*/{FOLD_RESULT_FILE}")]
    return sorted(found)


def fold_seconds(run_dir: Path, fold_dir: Path) -> float:
    """A fold's wall time from file times: from the end of the fold before it in the same run (or the run's start,
    when ``config_resolved.yaml`` was written) to its result file, plus, for a resumed fold, the training time before
    the resume (:func:`~workflow.progress.seconds_before_resume`)."""
    end = (fold_dir / FOLD_RESULT_FILE).stat().st_mtime
    earlier = [p.stat().st_mtime for p in [run_dir / "config_resolved.yaml", *run_dir.glob(f"fold*/{FOLD_RESULT_FILE}")]
               if p.is_file() and p.stat().st_mtime < end]
    # a fold resumed from a checkpoint: plus its training time before (workflow.progress)
    return end - max(earlier) + seconds_before_resume(fold_dir) if earlier else float("nan")


def pool_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Pool every finished fold of ``run_dirs`` (see the module docstring); return the report written to
    ``out_dir`` (``folds``, ``pooled``, ``runs``, ``wall_s``, ``warnings``)."""
    runs = [Path(d) for d in run_dirs]
    if not runs:
        raise SettingError("no run folder given")
    configs = [run_config(d) for d in runs]
    for run_dir, cfg in zip(runs[1:], configs[1:], strict=True):
        check_same_setting(configs[0], cfg, f"{run_dir} differs from {runs[0]}")
    results: list[dict[str, Any]] = []
    described: list[dict[str, Any]] = []
    wall = 0.0
    for run_dir in runs:
        folds = finished_folds(run_dir)
        info = run_info_of(run_dir)
        described.append({"run_dir": str(run_dir), "command": run_command(run_dir), "commit": info.get("commit"),
                          "device": info.get("device"), "folds": [fold for fold, _ in folds]})
        for fold, fold_dir in folds:
            if any(r["fold"] == fold for r in results):
                raise SettingError(f"fold {fold} is in more than one run ({run_dir} and an earlier one)")
            results.append({"fold": fold, **load_fold_result(fold_dir)})
            wall += fold_seconds(run_dir, fold_dir)
    if not results:
        raise SettingError(f"no finished fold in {[str(d) for d in runs]} (no fold*/{FOLD_RESULT_FILE})")
    results.sort(key=lambda r: r["fold"])
    method = method_of(configs[0].model)
    pooled = method.pool(results)
    extra = {"method": method.name, "wall_s": wall, "warnings": fold_warnings(results), "runs": described,
             "commit": described[0]["commit"], "device": described[0]["device"]}
    write_report(out_dir, results, pooled, list(configs[0].get("report_columns", [])), extra=extra)
    return {"folds": results, "pooled": pooled, **extra}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the folder to write metrics.json (and .csv, .md) into")
    parser.add_argument("runs", nargs="+", help="train.py run folders whose finished folds are pooled")
    args = parser.parse_args(argv)
    report = pool_runs(args.runs, args.out)
    print((Path(args.out) / "metrics.md").read_text())
    print(f"{len(report['folds'])} fold(s) from {len(args.runs)} run(s) -> {Path(args.out) / 'metrics.json'}")


if __name__ == "__main__":
    main()
