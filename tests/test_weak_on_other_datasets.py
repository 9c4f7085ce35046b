"""The weak method runs on every dataset with a defect-free class (DAGM, Severstal, a folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from datamodules.synthetic import write_dagm, write_folder, write_severstal
from tests.helpers import compose_cfg
from train import run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("dataset", ["dagm", "severstal", "folder"])
def test_weak_experiment_on(dataset: str, tmp_path: Path) -> None:
    root = tmp_path / dataset
    extra: list[str] = []
    if dataset == "dagm":
        write_dagm(root, textures=(1,))
        extra = ["data.classes=[1]"]
    elif dataset == "severstal":
        write_severstal(root)
        extra = ["data.num_classes=2", "data.image_shape=[32,200]"]
    else:
        write_folder(root, classes=("good", "scratch"), per_class=6)
    cfg = compose_cfg(["experiment=weak_kolektor", f"data={dataset}", f"data.root={root}", "data.archive=null",
                       "debug=fast", "logger=none", *extra])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    report = run(cfg)
    assert report["folds"][0]["metrics"]["n_images"] > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["folds"][0]["ap"] <= 1.0
