"""Train and evaluate with k-fold cross-validation: ``python train.py experiment=weak_kolektor``.

Every object comes from the Hydra config through ``hydra.utils.instantiate``. The folds listed in
``folds`` run one after another inside the job (each in ``<run dir>/fold<k>``); the job ends with a
table per fold and pooled, printed and written to the run folder as ``metrics.csv``/``.json``/``.md``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from evaluation.report import write_report
from evaluation.run_info import run_info

log = logging.getLogger(__name__)


def build_fold(
    cfg: DictConfig, fold: int, fold_dir: Path
) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """The datamodule, model and trainer of one fold, all from config."""
    datamodule = instantiate(cfg.data, fold=fold)
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), _convert_="all")
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None and "_target_" in c]
    if not loggers:  # nothing to log learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    extra: dict[str, Any] = {}
    if getattr(model, "max_steps", None):
        extra["max_steps"] = model.max_steps
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          default_root_dir=str(fold_dir), **extra)
    return datamodule, model, trainer


def write_predictions(path: Path, datamodule: L.LightningDataModule, per_image: dict) -> None:
    """One row per test image: its name and the module's per-image columns (e.g. label and score)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [k for k in per_image if k != "ids"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", *columns])
        for row, i in enumerate(per_image["ids"].tolist()):
            values = [per_image[c][row].item() for c in columns]
            writer.writerow([datamodule.test_samples[i].name, *(f"{v:.6g}" if isinstance(v, float) else v
                                                                 for v in values)])


def run(cfg: DictConfig) -> dict:
    """Run every fold of ``cfg.folds``; return the report (folds and pooled metrics)."""
    out_dir = Path(cfg.paths.output_dir)
    folds = list(cfg.folds)
    if cfg.get("ckpt_path") and len(folds) != 1:
        raise ValueError(f"ckpt_path resumes one fold: also set folds=[<fold>] (got folds={folds})")
    info = run_info()
    (out_dir).mkdir(parents=True, exist_ok=True)
    (out_dir / "run_info.json").write_text(json.dumps(info, indent=2))
    start = time.perf_counter()
    results = []
    model = None
    for fold in folds:
        L.seed_everything(cfg.seed + fold, workers=True)
        fold_dir = out_dir / f"fold{fold}"
        datamodule, model, trainer = build_fold(cfg, fold, fold_dir)
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        trainer.test(model, datamodule=datamodule, verbose=False)
        results.append({"fold": fold, **model.fold_result})
        write_predictions(fold_dir / "predictions.csv", datamodule, model.fold_result["per_image"])
        log.info("fold %d: %s", fold, {k: v for k, v in model.fold_result["metrics"].items()})
    pooled = model.pool(results)
    extra = {"wall_s": time.perf_counter() - start, **info}
    table = write_report(out_dir, results, pooled, list(cfg.report_columns), extra=extra)
    log.info("results (%s):\n%s", out_dir, table)
    print(table)
    return {"folds": results, "pooled": pooled, "wall_s": extra["wall_s"]}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if cfg.get("print_config", True):
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    report = run(cfg)
    metric = cfg.get("optimized_metric")
    return float(report["pooled"][metric]) if metric else None


if __name__ == "__main__":
    main()
