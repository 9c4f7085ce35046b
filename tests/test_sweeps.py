"""Sweeps: every conf/hparams_search file composes; the sweep summary (table + plots) on hand-written jobs and
after real tiny sweeps (basic sweeper and Optuna); the Slurm launcher config; every optimizer with both methods."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import PROJECT_ROOT
from tests.helpers import compose_cfg
from workflow.sweep_callback import SweepSummaryCallback
from workflow.sweep_plots import choose_x
from workflow.sweep_summary import load_jobs, main, setting_label, summarize, varying_keys, write_summary

HPARAMS_SEARCHES = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "hparams_search").glob("*.yaml"))
OPTIMIZERS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "optimizer").glob("*.yaml"))
# one torch thread per training subprocess: the tests share 2 cores, where spinning threads slow them down many-fold
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
TINY = ["experiment=demo", "debug=fast", "logger=none", "callbacks=none", "model.heatmap_dir=null"]
ABSENT = object()




# -- the summary on hand-written jobs --------------------------------------------------------------------------
def write_job(sweep: Path, num: int, overrides: list[str], folds: list[dict] | None,
              columns: tuple[str, ...] = ("ap", "false_calls")) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"report_columns": list(columns)}))
    if folds is not None:
        payload = {"folds": [{"fold": i, **f} for i, f in enumerate(folds)], "pooled": {"ap": 0.0}, "wall_s": 1.0}
        (job / "metrics.json").write_text(json.dumps(payload))


@pytest.fixture
def hand_sweep(tmp_path: Path) -> Path:
    """Four finished jobs (2 counts x rotation, 2-3 folds each) and one that never wrote metrics.json."""
    sweep = tmp_path / "sweep"
    common = ["experiment=demo", "folds=[0,1,2]"]
    write_job(sweep, 0, ["data.num_defective=5", "model.rotate=False", *common],
              [{"ap": 0.5, "false_calls": 1, "n_images": 10}, {"ap": 0.7, "false_calls": 3, "n_images": 10},
               {"ap": 0.9, "false_calls": 5, "n_images": 10}])
    write_job(sweep, 1, ["data.num_defective=5", "model.rotate=True", *common],
              [{"ap": 1.0, "false_calls": 0}, {"ap": 0.5, "false_calls": 2}])
    write_job(sweep, 2, ["data.num_defective=10", "model.rotate=False", *common],
              [{"ap": 0.25, "false_calls": 4}, {"ap": 0.75, "false_calls": 8}])
    write_job(sweep, 10, ["data.num_defective=10", "model.rotate=True", *common], [{"ap": 0.6, "false_calls": 1}])
    write_job(sweep, 3, ["data.num_defective=15", "model.rotate=True", *common], None)  # failed: left out
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_summary_of_hand_written_jobs_has_exact_means_and_stds(hand_sweep: Path) -> None:
    summary = write_summary(hand_sweep, labels={"model.rotate=true": "rotation"})
    assert summary.keys == ["data.num_defective", "model.rotate"]  # experiment and folds do not vary
    rows = read_csv(summary.csv_path)
    assert [(r["data.num_defective"], r["model.rotate"], r["jobs"], r["n_folds"]) for r in rows] == [
        ("5", "False", "0", "3"), ("5", "True", "1", "2"), ("10", "False", "2", "2"), ("10", "True", "10", "1")]
    assert float(rows[0]["ap_mean"]) == pytest.approx(0.7) and float(rows[0]["ap_std"]) == pytest.approx(0.2)
    assert float(rows[0]["false_calls_mean"]) == 3.0 and float(rows[0]["false_calls_std"]) == 2.0
    assert float(rows[0]["n_images_mean"]) == 10.0 and rows[1]["n_images_mean"] == "nan"
    assert float(rows[1]["ap_mean"]) == 0.75 and float(rows[1]["ap_std"]) == pytest.approx(math.sqrt(0.125))
    assert float(rows[2]["false_calls_mean"]) == 6.0 and float(rows[2]["false_calls_std"]) == pytest.approx(
        math.sqrt(8))
    assert float(rows[3]["ap_mean"]) == 0.6 and rows[3]["ap_std"] == "nan"  # one fold: no std
    md = summary.md_path.read_text()
    assert "| data.num_defective | model.rotate | jobs | folds | ap | false_calls |" in md
    assert "| 5 | False | 0 | 3 | 0.7000 ± 0.2000 | 3.0000 ± 2.0000 |" in md
    assert "| 10 | True | 10 | 1 | 0.6000 ± nan | 1.0000 ± nan |" in md
    assert summary.plot_path is not None and summary.plot_path.stat().st_size > 1000


def test_summary_columns_are_every_jobs_report_columns(tmp_path: Path) -> None:
    """A sweep over two experiments: each job's report columns reach the table, the first job's first."""
    sweep = tmp_path / "mixed"
    write_job(sweep, 0, ["experiment=demo"], [{"ap": 0.9, "false_calls": 2, "n_images": 10}])
    write_job(sweep, 1, ["experiment=cluster_demo"], [{"acc": 0.8, "nmi": 0.5, "n_images": 10}],
              columns=("acc", "nmi", "not_in_any_fold"))
    md = write_summary(sweep, plot=False).md_path.read_text()
    assert "| experiment | jobs | folds | ap | false_calls | acc | nmi |" in md
    assert "n_images" not in md and "not_in_any_fold" not in md


def test_summary_choices_x_axis_labels_and_cli(hand_sweep: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    jobs = load_jobs(hand_sweep)
    rows, _ = summarize(jobs, varying_keys(jobs))
    keys = ["data.num_defective", "model.rotate"]
    assert choose_x(rows, keys) == "data.num_defective"
    assert choose_x(rows, ["model.rotate"]) is None  # no numeric key: bar chart
    assert choose_x(rows, keys, x="model.rotate") == "data.num_defective"  # not numeric: logged, chosen instead
    assert choose_x(rows, keys, x="seed") == "data.num_defective"  # not swept: logged, chosen instead
    assert setting_label("model.rotate", "True", {"model.rotate=true": "rotation"}) == "rotation"
    assert setting_label("model.stages.1.train", "[trunk,lnet,dnet]",
                         {"model.stages.1.train=[trunk, lnet, dnet]": "not frozen"}) == "not frozen"
    assert setting_label("model.rotate", "False", {"model.rotate": "rot"}) == "rot=False"
    main([str(hand_sweep), "--x", "data.num_defective", "--metrics", "ap", "--label", "model.rotate=true:rotation"])
    assert "| 5 | True | 1 | 2 | 0.7500 ±" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        write_summary(tmp_path / "empty")


def test_callback_summarizes_the_sweep_dir_and_never_raises(hand_sweep: Path, tmp_path: Path) -> None:
    callback = SweepSummaryCallback(metrics=["ap"], labels=OmegaConf.create({"model.rotate=true": "rotation"}))
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(hand_sweep)}}}))
    assert len(read_csv(hand_sweep / "sweep_summary.csv")) == 4
    SweepSummaryCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "none")}}}))


# -- configs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("search", HPARAMS_SEARCHES)
def test_every_hparams_search_composes_with_keys_that_exist(search: str) -> None:
    experiments = ["cluster_neu"] if search.startswith("cluster") else ["weak_kolektor"]
    if search == "optimizers":
        experiments.append("cluster_neu")
    for experiment in experiments:
        cfg = compose_cfg([f"hparams_search={search}", f"experiment={experiment}"])
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        params = cfg.hydra.sweeper.params
        assert params
        for key in params:
            assert key in cfg.hydra.runtime.choices or OmegaConf.select(cfg, key, default=ABSENT) is not ABSENT, key
        if "optuna" in search:
            assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
            assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric in cfg.report_columns
        else:  # the last job of the sweep composes (its value of every swept key)
            parser = OverridesParser.create()
            last = [f"{k}={list(parser.parse_override(f'{k}={v}').sweep_string_iterator())[-1]}"
                    for k, v in params.items()]
            compose_cfg([f"experiment={experiment}", *last])
        callback = instantiate(cfg.hydra.callbacks.sweep_summary)
        assert isinstance(callback, SweepSummaryCallback)


def test_figure_ablation_overrides_reach_the_weak_model() -> None:
    cfg = compose_cfg(["experiment=demo", "model.stages.0.iterations=0", "model.stages.1.train=[trunk,lnet,dnet]",
                       "model.rotate=true"])
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), _convert_="all")
    assert [s.name for s in model.plan.active] == ["decision", "joint"]  # stage 1 dropped: no LNet training
    assert model.plan.active[0].train == ("trunk", "lnet", "dnet") and model.hparams.rotate
    assert model.max_steps == 60 + 20


def test_slurm_launcher_composes_and_renders_an_sbatch_script(tmp_path: Path, monkeypatch) -> None:
    argv = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "experiment=weak_kolektor", "trainer=ddp",
            "trainer.devices=4", "++trainer.num_nodes=2"]
    out = subprocess.run([sys.executable, "train.py", *argv, "--cfg", "hydra"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out.stdout
    assert "partition: gpu" in out.stdout
    cfg = compose_cfg(argv)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 4, 4)
    # what the launcher hands to submitit (its own renaming), rendered as sbatch options
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(cluster="slurm", folder=str(tmp_path / "submitit"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"_target_", "submitit_folder", "max_num_timeout", "name"}
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in skip})
    script = executor._executor._make_submission_file_text("python train.py", "uid")
    for option in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--partition=gpu", "--time=240"):
        assert f"#SBATCH {option}" in script


@pytest.mark.parametrize("method", ["weak", "cluster"])
def test_every_optimizer_steps_with_both_methods(method: str) -> None:
    overrides = (["experiment=demo", "model.net.lnet_wide=8"] if method == "weak"
                 else ["experiment=cluster_neu_cpu", "model.num_clusters=6", "model.backbone.name=test_convnext"])
    cfg = compose_cfg(overrides)
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), _convert_="all")
    sum(p.square().sum() for p in model.parameters()).backward()
    for optimizer in OPTIMIZERS:
        optimizer_cfg = compose_cfg([*overrides, f"optimizer={optimizer}"]).optimizer
        model.optimizer_factory = instantiate(optimizer_cfg)
        setup = model.configure_optimizers()
        opt, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
        assert type(opt).__name__.lower() == optimizer
        if method == "weak":  # the paper's SGD stage rate, scaled by the optimizer's own lr over SGD's 0.1
            scale = optimizer_cfg.lr / 0.1
            assert opt.param_groups[0]["lr"] == pytest.approx(cfg.model.stages[0].lr * scale)
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        scheduler.step()
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)), optimizer


# -- real sweeps in a subprocess -------------------------------------------------------------------------------
def run_train(args: list[str]) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "train.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env=ENV, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_sweep_of_the_weak_method_ends_with_one_summary(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_train(["hparams_search=fig5_rotation", *TINY, "folds=[0,1]", "data.num_defective=2,4",
               f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={sweep}"])
    rows = read_csv(sweep / "sweep_summary.csv")
    assert [(r["data.num_defective"], r["model.rotate"]) for r in rows] == [
        ("2", "False"), ("2", "True"), ("4", "False"), ("4", "True")]
    for row in rows:
        (job,) = row["jobs"].split()
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        assert f"data.num_defective={row['data.num_defective']}" in overrides
        assert f"model.rotate={row['model.rotate']}" in overrides
        folds = json.loads((sweep / job / "metrics.json").read_text())["folds"]
        assert [f["fold"] for f in folds] == [0, 1] and row["n_folds"] == "2"
        for metric in ("ap", "false_calls", "pixel_auroc"):
            values = [f[metric] for f in folds]
            assert float(row[f"{metric}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{metric}_std"]) == pytest.approx(statistics.stdev(values))
    md = (sweep / "sweep_summary.md").read_text().splitlines()
    assert sum(line.startswith("| 2 |") or line.startswith("| 4 |") for line in md) == 4
    assert (sweep / "sweep_summary.png").stat().st_size > 1000
    assert not list(sweep.glob("*/sweep_summary.csv"))  # one summary, in the sweep folder only


def test_optuna_sweep_runs_two_trials_and_ends_with_the_summary(tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    run_train(["hparams_search=weak_optuna", *TINY, "hydra.sweeper.n_trials=2", f"paths.data_dir={tmp_path / 'data'}",
               f"hydra.sweep.dir={sweep}"])
    pooled = [json.loads((sweep / str(i) / "metrics.json").read_text())["pooled"]["ap"] for i in range(2)]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(pooled))
    rows = read_csv(sweep / "sweep_summary.csv")
    assert len(rows) == 2 and {"model.stages.0.lr", "model.alpha_init"} <= set(rows[0])
    assert (sweep / "sweep_summary.png").stat().st_size > 1000
