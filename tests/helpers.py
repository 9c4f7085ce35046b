"""Helpers shared by the tests: DataModule assertions, config composition, a ddp_sim subprocess run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from datamodules import DefectDataModule, Sample

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(overrides: list[str]) -> DictConfig:
    """The root config composed with ``overrides`` (Hydra's own config included), outside a Hydra app."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(PROJECT_ROOT)
        cfg.paths.output_dir = "/tmp/unused"
    return cfg


def run_ddp_sim(overrides: list[str], run_dir: Path, probe: Path, *extra: str) -> None:
    """``train.py`` with ``overrides`` under ``trainer=ddp_sim`` (2 CPU processes), recording each rank's
    batches with :class:`tests.ddp_probe.DDPProbe` into ``probe``; fails the test if it fails."""
    command = [sys.executable, "train.py", *overrides, "trainer=ddp_sim", f"hydra.run.dir={run_dir}",
               "print_config=false", "+callbacks.probe._target_=tests.ddp_probe.DDPProbe",
               f"+callbacks.probe.out={probe}", *extra]
    out = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr[-4000:]


def fold_test_sets(make_fold: Callable[[int], DefectDataModule], samples: Sequence[Sample],
                   num_folds: int = 3) -> list[list[Sample]]:
    """Split ``samples`` with each fold's DataModule; assert train and test are disjoint and the test sets
    partition ``samples``; return the test sets (for the caller's stratification checks)."""
    tests = []
    for fold in range(num_folds):
        train, test = make_fold(fold).split(list(samples))
        assert not {s.name for s in train} & {s.name for s in test}
        tests.append(test)
    seen = sorted(s.name for test in tests for s in test)
    assert seen == sorted(s.name for s in samples)
    return tests
