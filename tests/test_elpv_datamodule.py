"""data=elpv: the cells of the elpv-dataset package's labels.csv, thresholds, folds by label and type, no masks."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from datamodules import DatasetError, ElpvDataModule
from datamodules import elpv as elpv_module
from tests.helpers import compose_cfg

#: (probability, type, how many) of the generated package: every rating of both types
LAYOUT = [(0.0, "mono", 9), (0.0, "poly", 12), (1 / 3, "mono", 3), (1 / 3, "poly", 3),
          (2 / 3, "mono", 3), (2 / 3, "poly", 3), (1.0, "mono", 6), (1.0, "poly", 9)]


def write_elpv_package(root: Path, size: int = 24) -> Path:
    """The installed package's layout: ``root/data/labels.csv`` and ``root/data/images/cellNNNN.png``."""
    images = root / "data" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for probability, kind, count in LAYOUT:
        for _ in range(count):
            name = f"images/cell{len(lines) + 1:04d}.png"
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L").save(root / "data" / name)
            lines.append(f"{name}  {probability!r:<20} {kind}")
    (root / "data" / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A generated elpv-dataset, found where the installed package would be."""
    root = write_elpv_package(tmp_path / "elpv_dataset")
    monkeypatch.setattr(elpv_module, "elpv_package_dir", lambda: root)
    return root


def test_defective_is_probability_above_the_threshold_and_uncertain_cells_are_kept_or_dropped(package: Path) -> None:
    samples = ElpvDataModule().list_samples()
    assert len(samples) == 48 and sum(s.label for s in samples) == 3 + 3 + 6 + 9  # 2/3 and 1
    assert all(s.mask is None and s.mask_rle is None and s.group == s.name for s in samples)
    assert not any(s.mask_known for s in samples if s.label)  # no masks: out of the pixel metrics
    assert sum(s.label for s in ElpvDataModule(defect_threshold=0.2).list_samples()) == 27  # 1/3 defective too
    kept = ElpvDataModule(drop_uncertain=True).list_samples()
    assert len(kept) == 42 and sum(s.label for s in kept) == 21
    with pytest.raises(ValueError, match="defect_threshold"):
        ElpvDataModule(defect_threshold=1.0)


def test_folds_are_stratified_by_label_and_cell_type(package: Path) -> None:
    tests = []
    for fold in range(3):
        dm = ElpvDataModule(fold=fold, image_size=(16, 16))
        train, test = dm.split(dm.list_samples())
        assert not {s.name for s in train} & {s.name for s in test}
        tests.append(test)
    assert sorted(s.name for t in tests for s in t) == sorted(s.name for s in ElpvDataModule().list_samples())
    for stratum, total in Counter((s.label, s.name.split("/")[0]) for t in tests for s in t).items():
        counts = [sum((s.label, s.name.split("/")[0]) == stratum for s in t) for t in tests]
        assert max(counts) - min(counts) <= 1 and sum(counts) == total, (stratum, counts)


def test_data_elpv_composes_and_serves_the_package_images(package: Path) -> None:
    cfg = compose_cfg(["data=elpv", "data.image_size=[16,16]"])
    dm = instantiate(cfg.data, fold=0)
    assert isinstance(dm, ElpvDataModule) and dm.root == package
    dm.prepare_data()
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["image"].shape == (1, 16, 16) and not item["mask"].any()
    assert compose_cfg(["experiment=weak_elpv_cpu"]).data._target_ == "datamodules.ElpvDataModule"


def test_without_the_package_a_clear_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match=r'pip install -e "\.\[elpv\]"'):
        ElpvDataModule()


def test_a_malformed_labels_line_names_the_file_and_line(tmp_path: Path) -> None:
    root = write_elpv_package(tmp_path / "pkg")
    with open(root / "data" / "labels.csv", "a") as handle:
        handle.write("images/cell9999.png mono\n")
    with pytest.raises(DatasetError, match=r"labels.csv:49"):
        ElpvDataModule(root=root).list_samples()


@pytest.mark.real_data
def test_the_installed_package_lists_its_2624_cells() -> None:
    if importlib.util.find_spec("elpv_dataset") is None:
        pytest.skip("elpv-dataset is not installed (pip install -e '.[elpv]')")
    dm = ElpvDataModule()
    samples = dm.list_samples()
    assert len(samples) == 2624 and sum(s.label for s in samples) == 821  # 106 cells at 2/3, 715 at 1
    assert Counter(s.name.split("/")[0] for s in samples) == {"mono": 1074, "poly": 1550}
    with Image.open(samples[0].image) as image:
        assert image.size == (300, 300) and image.mode == "L"
