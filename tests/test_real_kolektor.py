"""Smoke tests on the real KolektorSDD in ../shared/datasets (skipped where it is absent)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import KolektorSDDDataModule
from datamodules.kolektor import OFFICIAL_TEST_FOLDS
from datamodules.splits import ksdd_split_from_pickle
from lightning_modules.weak import WeakDefectNet, WeakDetectionModule

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def real_root(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real") / "KolektorSDD"
    KolektorSDDDataModule(root=root, archive=shared_datasets / "KolektorSDD.zip").prepare_data()
    return root


def test_real_dataset_counts_and_official_folds(real_root: Path, shared_datasets: Path) -> None:
    dm = KolektorSDDDataModule(root=real_root, image_size=(88, 32), fold=0)
    samples = dm.list_samples()
    assert len(samples) == 399 and sum(s.label for s in samples) == 52
    assert len({s.group for s in samples}) == 50
    _, test = ksdd_split_from_pickle(shared_datasets / "splits" / "KSDD" / "split_33_33.pyb")
    assert [sorted(f) for f in test] == [sorted(f) for f in OFFICIAL_TEST_FOLDS]
    for fold in range(3):
        dm = KolektorSDDDataModule(root=real_root, image_size=(88, 32), fold=fold)
        dm.setup()
        assert {s.group for s in dm.test_samples} == set(OFFICIAL_TEST_FOLDS[fold])
        assert not {s.group for s in dm.train_samples} & set(OFFICIAL_TEST_FOLDS[fold])


@pytest.mark.parametrize(("name", "folders"), [("split_5_5", 5), ("split_10_10", 10), ("split_33_33", 33)])
def test_a_split_file_trains_on_every_image_of_its_folders(real_root: Path, shared_datasets: Path, name: str,
                                                          folders: int) -> None:
    """As the reference code reads them: the listed folders' images, defect-free ones too, and no other."""
    dm = KolektorSDDDataModule(root=real_root, image_size=(88, 32), fold=1,
                               split_file=shared_datasets / "splits" / "KSDD" / f"{name}.pyb")
    dm.setup()
    train_folders, test_folders = ksdd_split_from_pickle(dm.split_file)
    assert len(train_folders[1]) == folders
    assert {s.group for s in dm.train_samples} == set(train_folders[1])
    assert {s.group for s in dm.test_samples} == set(test_folders[1])
    everything = {s.name for s in dm.list_samples() if s.group in set(train_folders[1])}
    assert {s.name for s in dm.train_samples} == everything and any(not s.label for s in dm.train_samples)


def test_a_few_training_steps_and_a_test_on_real_images(real_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    stages = [{"name": "localization", "iterations": 3, "lr": 0.1, "train": ["trunk", "lnet"], "losses": ["weak"],
               "alpha": "collaborative"},
              {"name": "decision", "iterations": 3, "lr": 0.01, "train": ["dnet"], "losses": ["bce"]}]
    model = WeakDetectionModule(WeakDefectNet(lnet_wide=16), partial(torch.optim.SGD), stages=stages,
                                heatmap_dir="heatmaps", max_clean_pictures=1)
    dm = KolektorSDDDataModule(root=real_root, image_size=(176, 64), fold=2, eval_batch_size=32)
    trainer = L.Trainer(accelerator="cpu", max_steps=model.max_steps, max_epochs=-1, logger=False,
                        default_root_dir=str(tmp_path), enable_progress_bar=False, gradient_clip_val=1.0,
                        enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    metrics = model.fold_result["metrics"]
    assert metrics["n_images"] == len(dm.test_samples) and metrics["n_defective"] == 16
    assert 0.0 <= metrics["ap"] <= 1.0 and 0.0 <= metrics["pixel_auroc"] <= 1.0
    assert len(list((tmp_path / "heatmaps").glob("*.png"))) == 16 + 1
