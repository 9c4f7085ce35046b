"""Hydra composes every experiment; overrides and --cfg job work; objects come from instantiate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datamodules import DefectDataModule, FolderDataModule, NEUDataModule
from datamodules.synthetic import write_folder, write_neu_cls
from lightning_modules.baseline import ImageClassifierModule
from lightning_modules.cluster import ClusteringModule
from lightning_modules.cluster.plan import PseudoLabelViews
from lightning_modules.method import build_method
from lightning_modules.weak import WeakDetectionModule
from lightning_modules.weak.plan import BalancedPairs
from tests.conftest import PROJECT_ROOT
from tests.helpers import compose_cfg
from workflow.class_counts import fill_class_counts

EXPERIMENTS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml"))




@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={experiment}", f"data.root={tmp_path}"])
    assert cfg.task_name == experiment
    dm = instantiate(cfg.data, fold=1)
    if isinstance(dm, FolderDataModule):  # K and the defect-free class come from the class folders
        write_folder(tmp_path, classes=("good", "scratch", "stain"), per_class=3)
        cfg = fill_class_counts(cfg, dm)
        assert "num_clusters" not in cfg.model or (cfg.model.num_clusters, cfg.model.defect_free_class) == (3, 0)
    if isinstance(dm, NEUDataModule):  # the cluster presets leave K to the data: NEU's 6 classes
        write_neu_cls(tmp_path, per_class=1)
        cfg = fill_class_counts(cfg, dm)
        assert "num_clusters" not in cfg.model or (cfg.model.num_clusters, cfg.model.num_classes) == (6, 6)
    assert isinstance(dm, DefectDataModule) and dm.fold == 1
    model = build_method(cfg.model, cfg.optimizer)  # as train.py builds it
    expected = {"cluster": ClusteringModule, "weak": WeakDetectionModule, "baseline": ImageClassifierModule}
    name = "weak" if experiment == "demo" else experiment.split("_")[0]
    assert type(model) is expected[name] and model.name == name
    plan = PseudoLabelViews if isinstance(model, ClusteringModule) else BalancedPairs
    assert type(model.training_plan) is plan and not hasattr(dm, "train_mode")
    if expected is ClusteringModule:
        assert callable(model.training_plan.views)
        assert cfg.callbacks.pseudo_labels.num_clusters == model.hparams.num_clusters
    trainer = instantiate(cfg.trainer, logger=False, max_steps=model.max_steps)
    assert trainer.max_steps == model.max_steps


def test_paper_experiment_has_the_paper_settings() -> None:
    cfg = compose_cfg(["experiment=weak_kolektor"])
    assert list(cfg.data.image_size) == [1408, 512] and cfg.model.training_plan.pairs_per_batch == 1
    assert [s.iterations for s in cfg.model.stages] == [750, 1200, 300]
    assert [s.lr for s in cfg.model.stages] == [0.1, 0.01, 0.001]
    assert cfg.model.stages[1].lr_drops == {600: 0.001}
    assert (cfg.model.alpha_init, cfg.model.alpha_every) == (8.0, 30)
    assert list(cfg.folds) == [0, 1, 2]


@pytest.mark.parametrize("dataset", ["dagm", "severstal", "folder"])
def test_the_weak_experiment_keeps_another_datasets_own_size(dataset: str) -> None:
    """experiment=weak_kolektor data=<other> takes that dataset's image size, not KolektorSDD's 1408x512."""
    own = compose_cfg([f"data={dataset}"]).data.image_size
    cfg = compose_cfg(["experiment=weak_kolektor", f"data={dataset}"])
    assert list(cfg.data.image_size) == list(own) != [1408, 512]
    assert cfg.model.training_plan.pairs_per_batch == 1 and "pairs_per_batch" not in cfg.data


def test_overrides_reach_the_objects(kolektor_root: Path) -> None:
    cfg = compose_cfg(["experiment=weak_kolektor", "data.num_defective=10", "optimizer=adam", "trainer=cpu",
                       f"data.root={kolektor_root}"])
    assert cfg.data.num_defective == 10 and cfg.trainer.accelerator == "cpu"
    partial_opt = instantiate(cfg.optimizer)
    assert partial_opt.func.__name__ == "Adam"
    assert instantiate(cfg.data).num_defective == 10


def test_cluster_paper_experiment_settings() -> None:
    cfg = compose_cfg(["experiment=cluster_neu"])
    assert cfg.model.backbone.name == "convnextv2_tiny" and cfg.model.num_clusters is None  # from the data: 6
    views = cfg.model.training_plan.views
    assert (views.global_size, views.local_size, views.n_global, views.n_local) == (200, 96, 2, 6)
    assert cfg.model.training_plan.batch_size == 32
    assert cfg.optimizer._target_ == "torch.optim.RAdam"
    cfg5 = compose_cfg(["experiment=cluster_severstal_5c"])
    assert (cfg5.model.num_clusters, cfg5.model.defect_free_class, cfg5.data.num_classes) == (5, 0, 5)


def test_cfg_job_prints_the_composed_config() -> None:
    env = {**os.environ, "WANDB_MODE": "offline"}
    out = subprocess.run([sys.executable, "train.py", "experiment=weak_kolektor", "--cfg", "job"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "_target_: datamodules.KolektorSDDDataModule" in out.stdout
    assert "- 1408" in out.stdout and "lr_drops:" in out.stdout


@pytest.mark.parametrize(("reference", "others", "data_only"), [
    ("weak_kolektor_cpu", ["weak_elpv_cpu", "weak_folder_cpu"], ()),
    ("cluster_neu_cpu", ["cluster_folder_cpu"], ("num_clusters", "num_classes", "defect_free_class")),
    ("baseline_kolektor_cpu", ["baseline_elpv_cpu", "baseline_folder_cpu"], ()),
])
def test_a_methods_cpu_presets_differ_only_in_data(reference: str, others: list[str], data_only: tuple) -> None:
    """One setting per method across datasets: the CPU presets of a method share model, optimizer, callbacks and
    trainer; only the data (and what the data decides, such as the number of classes) differ."""
    def method_settings(experiment: str) -> dict:
        cfg = compose_cfg([f"experiment={experiment}"])
        model = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in data_only}
        return {"model": model, "optimizer": OmegaConf.to_container(cfg.optimizer),
                "callbacks": OmegaConf.to_container(cfg.callbacks), "trainer": OmegaConf.to_container(cfg.trainer)}

    expected = method_settings(reference)
    for other in others:
        assert method_settings(other) == expected, other
