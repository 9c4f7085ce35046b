"""A seed fixes a CPU run: the same seed repeats the weights, metrics and predictions exactly, another seed
changes them; every run keeps its composed config, the git commit and the package versions."""

from __future__ import annotations

import csv
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import PROJECT_ROOT
from tests.test_resume import TINY_DEMO, assert_same_results, checkpoint, demo_run, train


def scores(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "fold0" / "predictions.csv") as handle:
        return {row["name"]: float(row["score"]) for row in csv.DictReader(handle)}


def test_the_same_seed_repeats_a_cpu_run_exactly(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    first = demo_run(tmp_path_factory)  # trainer.deterministic is false (the default): not needed on CPU
    data_dir = tmp_path_factory.getbasetemp() / "demo_data"
    again = train(tmp_path / "again", *TINY_DEMO, f"paths.data_dir={data_dir}")
    assert_same_results(again, first, final_step=50)


def test_another_seed_changes_the_weights_and_scores(tmp_path_factory: pytest.TempPathFactory) -> None:
    first = demo_run(tmp_path_factory)  # first: it generates the data with seed 0, which both runs then read
    other = demo_run(tmp_path_factory, "seed=1")
    a, b = checkpoint(first)["state_dict"], checkpoint(other)["state_dict"]
    assert a.keys() == b.keys()
    assert sum(not torch.equal(a[k], b[k]) for k in a) > len(a) // 2
    assert scores(first).keys() == scores(other).keys()  # the same test images
    assert scores(first) != scores(other)


def test_every_run_records_its_config_commit_and_package_versions(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir = demo_run(tmp_path_factory)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert cfg.seed == 0 and list(cfg.folds) == [0] and cfg.task_name == "demo"
    assert list(cfg.data.image_size) == [64, 32] and cfg.model.net.lnet_wide == 16
    assert [s.iterations for s in cfg.model.stages] == [20, 20, 10]
    assert cfg.model._target_ == "lightning_modules.weak.WeakDetectionModule"
    assert cfg.trainer.deterministic is False
    assert OmegaConf.load(run_dir / ".hydra" / "overrides.yaml") == OmegaConf.create(
        [*TINY_DEMO, f"paths.data_dir={tmp_path_factory.getbasetemp() / 'demo_data'}"])  # hydra.* kept apart

    resolved = OmegaConf.load(run_dir / "config_resolved.yaml")
    assert resolved.data.seed == 0 and resolved.paths.output_dir == str(run_dir)  # interpolations resolved

    info = json.loads((run_dir / "run_info.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert info["commit"] in (head.stdout.strip(), head.stdout.strip() + "-dirty")
    for package in ("torch", "lightning", "hydra-core", "numpy"):
        assert info["packages"][package] == metadata.version(package)
    assert info["python"] == platform.python_version()
    assert info["device"].startswith("cpu")
    report = json.loads((run_dir / "metrics.json").read_text())
    assert info.pop("status") == "success"  # how the run ended: written to run_info.json alone, at the end
    assert {k: report[k] for k in info} == info  # the report carries the rest too
