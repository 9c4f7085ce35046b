"""The clustering method under DDP with 2 CPU processes (``train.py trainer=ddp_sim``): features gathered from both
ranks and clustered once, the same pseudo-labels on every rank, each test image counted once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from datamodules.synthetic import write_neu_cls
from metrics.clustering import clustering_summary
from tests.conftest import PROJECT_ROOT
from tests.helpers import run_ddp_sim

pytestmark = pytest.mark.slow


def test_train_py_with_two_processes_clusters_once_and_counts_every_test_image_once(tmp_path: Path) -> None:
    """With the GPU presets' views, made per batch on each rank's device (the per-image views of the CPU presets are
    made in the dataset, where DDP changes nothing but the batches: test_weak_ddp)."""
    root = write_neu_cls(tmp_path / "NEU-CLS", per_class=6, size=(32, 32), seed=3)
    sorted(root.glob("Cr_*"))[0].unlink()  # 35 images: fold 2 tests 11 (odd: the DistributedSampler repeats one)
    run_dir, probe = tmp_path / "run", tmp_path / "probe.json"
    overrides = [
        "experiment=cluster_neu_cpu", f"data.root={root}", "data.archive=null", "data.image_size=[32,32]",
        "model.training_plan.views.global_size=32", "model.training_plan.views.local_size=32",
        "model.training_plan.views.n_local=2", "model.training_plan.batch_size=8",
        "data.eval_batch_size=4", "model.max_steps=4", "model.warmup_steps=1",
        "callbacks.pseudo_labels.every_n_steps=2",
        "callbacks.pseudo_labels.pca_dim=8", "callbacks.pseudo_labels.nredo=1", "folds=[2]", "logger=none",
        "model.training_plan.views._target_=datamodules.views.BatchedMultiCropViews",
    ]
    # rank 1's random stream is put out of step: the heads re-initialised at each reassignment must still agree
    run_ddp_sim(overrides, run_dir, probe, "+callbacks.probe.label_key=pseudo_label",
                "+callbacks.probe.desync_rng=true")

    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data, fold=2)
    train, test = datamodule.split(datamodule.list_samples())
    assert len(test) == 11

    report = json.loads(probe.read_text())
    assert report["world_size"] == 2 and report["same_weights"] and report["same_pseudo_labels"]
    assert len(report["kmeans_sizes"]) == 2  # at the start and at step 2
    assert all(sum(sizes) == len(train) for sizes in report["kmeans_sizes"])  # every image, from both ranks
    assert all(len(b) == 8 for rank in report["batches"] for b in rank)  # batch_size per rank
    assert len(report["batches"][0]) == len(report["batches"][1]) == 4 and report["batches"][0] != report["batches"][1]

    fold = json.loads((run_dir / "metrics.json").read_text())["folds"][0]
    with open(run_dir / "fold2" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert fold["n_images"] == len(test) == len(rows)
    assert sorted(r["name"] for r in rows) == sorted(s.name for s in test)  # each test image exactly once
    clusters = torch.tensor([int(r["cluster"]) for r in rows])
    targets = torch.tensor([int(r["target"]) for r in rows])
    recomputed = clustering_summary(clusters, targets, 6, 6)  # num_clusters and num_classes from the data: NEU
    assert fold["confusion"] == recomputed["confusion"]
    assert (fold["acc"], fold["nmi"]) == pytest.approx((recomputed["acc"], recomputed["nmi"]))
