"""Helpers shared by the tests: DataModule assertions, config composition, a ddp_sim subprocess run, benchmark
scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from datamodules import DefectDataModule, Sample
from workflow.precision import register_resolvers

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(overrides: list[str]) -> DictConfig:
    """The root config composed with ``overrides`` (Hydra's own config included), outside a Hydra app."""
    register_resolvers()
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


#: W&B's run file (``run-*.wandb``) is a LevelDB-style log: a 7-byte file header (":W&B", magic, version), then
#: 32 KiB blocks of chunks, each with a 7-byte header (crc32, little-endian length, type); a block's last bytes
#: are padding when fewer than 7 are left. A record longer than a block's rest is split into several chunks.
WANDB_BLOCK, WANDB_CHUNK_HEADER, WANDB_FILE_HEADER = 32768, 7, 7


def wandb_records(path: Path) -> bytes:
    """The payload of a W&B run file with the block framing removed, so that a key is found even where the
    writer split its record at a block boundary (searching the raw bytes then misses it at random)."""
    data = path.read_bytes()
    payload = bytearray()
    position = WANDB_FILE_HEADER
    while position + WANDB_CHUNK_HEADER <= len(data):
        left_in_block = WANDB_BLOCK - position % WANDB_BLOCK
        if left_in_block < WANDB_CHUNK_HEADER:  # padding at a block's end
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        if length == 0 and data[position + 6] == 0:  # zero fill: nothing more in this block
            position += left_in_block
            continue
        start = position + WANDB_CHUNK_HEADER
        payload += data[start : start + length]
        position = start + length
    return bytes(payload)


def wait_for_wandb_records(path: Path, keys: Sequence[bytes], timeout: float = 20.0) -> bytes:
    """:func:`wandb_records` once every key is in them, or as they are after ``timeout`` seconds: W&B's service
    may still be writing a finished run's file while the same process has moved on (the next job)."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path)
        if all(key in records for key in keys) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (``benchmarks/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_masks(dataset) -> torch.Tensor:
    """Every item's mask of a :class:`~datamodules.dataset.SampleDataset`, stacked (decoded now)."""
    return torch.stack([dataset[i]["mask"] for i in range(len(dataset))])


def pair_batches(dm: DefectDataModule, pairs_per_batch: int = 1) -> list[dict]:
    """One epoch of the weak method's training batches (:class:`BalancedPairs`) over ``dm``'s training set."""
    from lightning_modules.weak.plan import BalancedPairs

    return list(BalancedPairs(pairs_per_batch).train_dataloader(dm.train_set, 1, 0, 0, dm.seed))
