"""Re-test a finished clustering run's fold models with whole images at several ``model.eval_scale`` factors.

    python benchmarks/eval_scale.py outputs/benchmarks/<run> --scales 1.0 0.8 --name <result name>

No retraining: each ``<run>/fold<k>/checkpoints/last.ckpt`` is rebuilt (:func:`load_trained_model`), its fold's data
from the run's ``config_resolved.yaml``, and tested by Lightning with the run's precision once per factor, as
``train.py`` tests (the head's cluster of each test image, Hungarian ACC, NMI, pooled over the folds). Writes
``benchmarks/results/<--name>.json`` with, for each factor, ``metrics.acc["<factor>"]`` and ``metrics.nmi[...]``
(pooled) and ``metrics.fold_acc[...]`` (a list, by fold).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_modules.checkpoints import load_trained_model  # noqa: E402
from lightning_modules.method import method_of  # noqa: E402
from workflow.run_info import require_clean_tree, write_result  # noqa: E402


def fold_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's ``(fold, checkpoint)`` pairs, by fold."""
    found = sorted((int(d.name.removeprefix("fold")), d / "checkpoints" / "last.ckpt")
                   for d in run_dir.glob("fold*") if d.name.removeprefix("fold").isdigit())
    if not found or not all(ckpt.is_file() for _, ckpt in found):
        raise SystemExit(f"{run_dir}: expected fold<k>/checkpoints/last.ckpt for every fold, found {found}")
    return found


def retest(run_dir: Path, scales: list[float]) -> dict[str, Any]:
    """Test every fold model of ``run_dir`` at each ``eval_scale`` in ``scales`` (each fold's model and data built
    once, then tested at every scale)."""
    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    folds = fold_dirs(run_dir)
    by_scale: dict[float, list[dict]] = {scale: [] for scale in scales}
    module = None
    for fold, ckpt in folds:
        module = load_trained_model(ckpt).module
        datamodule = instantiate(cfg.data, fold=fold)
        trainer = L.Trainer(accelerator="cpu", devices=1, precision=cfg.trainer.precision, logger=False,
                            enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
        for scale in scales:
            module.hparams.eval_scale = scale
            trainer.test(module, datamodule=datamodule, verbose=False)
            by_scale[scale].append(module.fold_result)
    results: dict[str, Any] = {}
    for scale, fold_results in by_scale.items():
        pooled = module.pool(fold_results)
        results[str(scale)] = {
            "pooled": {k: pooled[k] for k in ("n_images", "acc", "nmi")},
            "folds": [{"fold": fold, **{k: r["metrics"][k] for k in ("acc", "nmi")}}
                      for (fold, _), r in zip(folds, fold_results, strict=True)],
        }
        print(f"eval_scale {scale}: pooled ACC {pooled['acc']:.4f}, folds "
              f"{[round(r['metrics']['acc'], 4) for r in fold_results]}", flush=True)
    return results


RESULTS = ROOT / "benchmarks" / "results"
#: a result name: a plain file name (no folder, no ``..``)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_args(run_dir: Path, scales: list[float], name: str, overwrite: bool) -> None:
    """Refuse, before anything runs or is written: a ``--name`` that is not a plain file name (it would write
    outside ``benchmarks/results/``) or names an existing result (unless ``--overwrite``), a scale <= 0, and a
    run that is not a clustering run (only its models classify whole images into clusters)."""
    if not NAME.fullmatch(name) or ".." in name:
        raise SystemExit(f"--name {name!r}: give a plain file name (letters, digits, '.', '_', '-'); the result "
                         f"goes to {RESULTS}/<name>.json")
    if (RESULTS / f"{name}.json").exists() and not overwrite:
        raise SystemExit(f"{RESULTS / (name + '.json')} exists: choose another --name, or pass --overwrite")
    bad = [s for s in scales if not s > 0]
    if bad:
        raise SystemExit(f"--scales {bad}: every eval_scale factor must be > 0")
    config = run_dir / "config_resolved.yaml"
    if not config.is_file():
        raise SystemExit(f"{run_dir}: no config_resolved.yaml; give a train.py run folder")
    model = OmegaConf.load(config).model
    try:
        method = method_of(model).name  # the registry, as benchmarks/run.py tells a run's method
    except (TypeError, ValueError):
        method = None
    if method != "cluster":
        raise SystemExit(f"{run_dir} is a run of {model.get('_target_') or 'an unknown model'}: eval_scale re-tests "
                         "clustering runs only (ACC/NMI of the head's clusters)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path, help="a train.py run folder (config_resolved.yaml, fold<k>/)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.8])
    parser.add_argument("--name", required=True, help="the JSON's name under benchmarks/results/")
    parser.add_argument("--selection", default="test", choices=("test", "validation", "label_free", "fixed"),
                        help="test: comparing scales on the test folds is choosing on them")
    parser.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result of that --name")
    args = parser.parse_args()
    check_args(args.run_dir.resolve(), args.scales, args.name, args.overwrite)
    commit = require_clean_tree("benchmarks/eval_scale.py", args.allow_dirty, ROOT)
    start = time.perf_counter()
    run_dir = args.run_dir.resolve()
    scales = retest(run_dir, args.scales)
    trained = json.loads((run_dir / "run_info.json").read_text()) if (run_dir / "run_info.json").is_file() else {}
    metrics = {"run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
               "trained_at_commit": trained.get("commit"),
               "acc": {scale: r["pooled"]["acc"] for scale, r in scales.items()},
               "nmi": {scale: r["pooled"]["nmi"] for scale, r in scales.items()},
               "fold_acc": {scale: [f["acc"] for f in r["folds"]] for scale, r in scales.items()}}
    write_result(RESULTS, args.name,
                 "python benchmarks/eval_scale.py " + " ".join(sys.argv[1:]), commit, time.perf_counter() - start,
                 metrics, method="cluster", selection=args.selection)


if __name__ == "__main__":
    main()
