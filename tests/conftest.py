"""Shared fixtures: generated datasets in the real on-disk layouts, and the real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamodules.synthetic import write_kolektor_like

os.environ.setdefault("WANDB_MODE", "offline")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def kolektor_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KolektorSDD-layout dataset: 12 commutators x 8 parts, one defective part in each."""
    return write_kolektor_like(tmp_path_factory.mktemp("ksdd") / "KolektorSDD", num_folders=12, seed=1)


@pytest.fixture
def fresh_kolektor(tmp_path: Path) -> Path:
    """A small KolektorSDD-layout dataset of the test's own, free to damage."""
    return write_kolektor_like(tmp_path / "KolektorSDD", num_folders=6, parts_per_folder=3, size=(64, 32), seed=2)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real datasets beside the project (../shared/datasets); tests using it skip without it."""
    if not (SHARED_DATASETS / "KolektorSDD.zip").is_file():
        pytest.skip("real datasets not found at ../shared/datasets")
    return SHARED_DATASETS
