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

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from callbacks.config_in_checkpoint import ConfigInCheckpoint
from lightning_modules.method import DefectMethod, build_method, method_of
from workflow.class_counts import fill_class_counts
from workflow.config_tree import print_config_tree
from workflow.failure import reported_failures
from workflow.gathering import FoldResultWriter, load_fold_result
from workflow.loggers import build_loggers, finish, set_fold
from workflow.precision import register_resolvers
from workflow.progress import seconds_before_resume
from workflow.quiet import quiet_third_party
from workflow.report import write_report
from workflow.run_checks import check_run_args, fold_guards
from workflow.run_info import run_info
from workflow.run_warnings import fold_warnings, warnings_text

log = logging.getLogger(__name__)
register_resolvers()  # ${cpu_precision:...} in the CPU presets


def build_callbacks(cfg: DictConfig, fold_dir: Path) -> list[L.Callback]:
    """Every configured callback; checkpoint callbacks without a ``dirpath`` write to ``<fold dir>/checkpoints``
    (not to the job-wide logger's folder, which all folds share)."""
    callbacks = []
    for c in (cfg.get("callbacks") or {}).values():
        if c is None or "_target_" not in c:
            continue
        extra = {"dirpath": str(fold_dir / "checkpoints")} if "dirpath" in c and c.dirpath is None else {}
        callbacks.append(instantiate(c, **extra))
    return callbacks


def build_fold(
    cfg: DictConfig, fold: int, fold_dir: Path, loggers: list[Logger] | None = None
) -> tuple[L.LightningDataModule, DefectMethod, L.Trainer]:
    """The datamodule, method and trainer of one fold, all from config; ``loggers`` are the job's. The trainer
    runs the method's step budget (:attr:`DefectMethod.max_steps`)."""
    datamodule = instantiate(cfg.data, fold=fold)
    model = build_method(cfg.model, cfg.optimizer)
    # <fold dir>/fold_result.pt (see run()); the config in every checkpoint (predict.py rebuilds the model)
    callbacks = [*build_callbacks(cfg, fold_dir), FoldResultWriter(), ConfigInCheckpoint(cfg, fold=fold),
                 *fold_guards(cfg, fold)]
    loggers = list(loggers or [])
    if not loggers:  # nothing to log learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          default_root_dir=str(fold_dir), max_steps=model.max_steps)
    return datamodule, model, trainer


def write_predictions(path: Path, datamodule: L.LightningDataModule, per_image: dict) -> None:
    """One row per test image: its name and the module's per-image columns (e.g. label and score); floats with the
    digits that read back exactly (9 for float32, 17 for float64 such as ``score_pooled``), so that metrics
    recomputed from the file agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # under ddp_spawn this process never ran setup(): list the fold's samples (no decoding)
    samples = datamodule.test_samples or datamodule.split(datamodule.list_samples())[1]
    columns = [k for k in per_image if k != "ids"]
    formats = [".17g" if per_image[c].dtype == torch.float64 else ".9g" for c in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", *columns])
        for row, i in enumerate(per_image["ids"].tolist()):
            values = [per_image[c][row].item() for c in columns]
            writer.writerow([samples[i].name, *(format(v, f) if isinstance(v, float) else v
                                                for v, f in zip(values, formats, strict=True))])


def check_multirun_strategy(cfg: DictConfig) -> None:
    """Refuse a local Hydra multirun with a strategy that relaunches the script (``strategy=ddp``): Lightning
    starts ranks 1.. as new ``train.py`` processes with the whole command line, sweep included, so each rank
    would run a sweep of its own. ``trainer=ddp_spawn`` spawns them from the job instead; under Slurm
    (``hydra/launcher=slurm``) Slurm starts the ranks and ``ddp`` is right."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = str(HydraConfig.get().launcher.get("_target_", ""))
    strategy = cfg.trainer.get("strategy", "auto")
    relaunches = isinstance(strategy, str) and strategy.startswith("ddp") and not any(
        k in strategy for k in ("spawn", "fork", "notebook"))
    if relaunches and cfg.trainer.get("devices", 1) != 1 and ("BasicLauncher" in launcher or "Joblib" in launcher):
        raise ValueError(f"trainer.strategy={strategy} in a local Hydra multirun: each rank would run its own "
                         f"sweep. Use trainer=ddp_spawn for multiruns (or hydra/launcher=slurm)")


def run(cfg: DictConfig) -> dict:
    """Run every fold of ``cfg.folds``; return the report (folds and pooled metrics)."""
    out_dir = Path(cfg.paths.output_dir)
    folds = list(cfg.folds)
    if cfg.get("ckpt_path") and len(folds) != 1:
        raise ValueError(f"ckpt_path resumes one fold: also set folds=[<fold>] (got folds={folds})")
    # under DDP started per rank (trainer=ddp, Slurm) every rank runs this function; only rank 0 writes files
    rank_zero = rank_zero_only.rank == 0
    # class counts the model config leaves null come from the data, once for every fold (workflow.class_counts)
    cfg = fill_class_counts(cfg)
    info = run_info()
    (out_dir).mkdir(parents=True, exist_ok=True)
    if rank_zero:
        (out_dir / "run_info.json").write_text(json.dumps(info, indent=2))
        # what the run actually used (Hydra's .hydra/config.yaml keeps the ${...}); Hydra's own section left out
        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        (out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(job_cfg, resolve=True))
    method = method_of(cfg.model)
    start = time.perf_counter()
    results = []
    loggers = build_loggers(cfg)
    status = "failed"
    try:
        for fold in folds:
            L.seed_everything(cfg.seed + fold, workers=True)
            fold_dir = out_dir / f"fold{fold}"
            set_fold(loggers, fold)
            datamodule, model, trainer = build_fold(cfg, fold, fold_dir, loggers)
            if cfg.get("train", True):
                trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            trainer.test(model, datamodule=datamodule, verbose=False)
            # from the file rank 0 wrote: under ddp_spawn the test ran in other processes (model.fold_result is
            # not set here); every strategy reads it the same way
            fold_result = load_fold_result(fold_dir)
            results.append({"fold": fold, **fold_result})
            if rank_zero:
                write_predictions(fold_dir / "predictions.csv", datamodule, fold_result["per_image"])
            log.info("fold %d: %s", fold, {k: v for k, v in fold_result["metrics"].items()})
        status = "success"
    finally:
        finish(loggers, status)
    pooled = method.pool(results)
    # wall time: this job's, plus the training time before a resume (ckpt_path) spent in an earlier job
    wall = time.perf_counter() - start + sum(seconds_before_resume(out_dir / f"fold{f}") for f in folds)
    extra = {"method": method.name, "wall_s": wall, "warnings": fold_warnings(results), **info}
    if rank_zero:
        table = write_report(out_dir, results, pooled, list(cfg.report_columns), extra=extra)
        log.info("results (%s):\n%s", out_dir, table)  # on the console (Hydra logs to stdout) and in train.log
        if extra["warnings"]:
            log.warning(warnings_text(extra["warnings"]))
    return {"folds": results, "pooled": pooled, "wall_s": extra["wall_s"], "warnings": extra["warnings"]}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_third_party()
    # a failure from here on: status and error in run_info.json, project errors as one line (workflow.failure)
    with reported_failures(cfg.paths.output_dir):
        if cfg.get("print_config", True):
            print_config_tree(cfg)
        check_multirun_strategy(cfg)
        check_run_args(cfg)
        report = run(cfg)
    # a sweep's objective; none where the run cannot compute it (clustering images without classes has no ACC)
    value = report["pooled"].get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
