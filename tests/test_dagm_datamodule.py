"""The DAGM 2007 DataModule on generated data in the official layout (ClassN/{Train,Test}, Labels.txt)."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from datamodules import DAGMDataModule, DatasetError, list_dagm_samples
from datamodules.dagm import texture_of
from datamodules.synthetic import write_dagm
from tests.helpers import all_masks, compose_cfg, fold_test_sets, pair_batches

N_PER_SPLIT, DEFECTIVE_EVERY = 6, 3  # per texture: 12 images, 4 defective


@pytest.fixture(scope="module")
def dagm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dagm(tmp_path_factory.mktemp("dagm") / "DAGM", textures=(1, 2, 3), n_per_split=N_PER_SPLIT,
                      defective_every=DEFECTIVE_EVERY, seed=5)


@pytest.fixture
def fresh_dagm(tmp_path: Path) -> Path:
    """Test 0001-0003, Train 0004-0006 (numbered as in the release)."""
    return write_dagm(tmp_path / "DAGM", textures=(1,), n_per_split=3, defective_every=2, size=(32, 32))


def make_dm(root: Path, **kwargs) -> DAGMDataModule:
    kwargs.setdefault("image_size", (32, 32))
    kwargs.setdefault("classes", [1])
    return DAGMDataModule(root=root, **kwargs)


def write_labels(root: Path, rows: list[str], split: str = "Train") -> Path:
    path = root / "Class1" / split / "Label" / "Labels.txt"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_one_texture_pools_train_and_test(dagm_root: Path) -> None:
    samples = list_dagm_samples(dagm_root, [2])
    assert len(samples) == 2 * N_PER_SPLIT
    names = [s.name for s in samples]
    # as in the release: Test numbered from 0001, Train after it (here 0007-0012)
    assert names[0] == f"Class2/Train/{N_PER_SPLIT + 1:04d}" and names[-1] == f"Class2/Test/{N_PER_SPLIT:04d}"
    assert sum(s.label for s in samples) == 4
    assert all(s.target == s.label and s.group == s.name for s in samples)
    for s in samples:
        assert (s.mask is not None) == bool(s.label)
        if s.mask is not None:
            assert s.mask.name == f"{s.image.stem}_label.PNG" and s.mask.parent.name == "Label"


def test_all_textures_by_default(dagm_root: Path) -> None:
    samples = list_dagm_samples(dagm_root)
    counts = collections.Counter(texture_of(s) for s in samples)
    assert counts == {f"Class{n}": 2 * N_PER_SPLIT for n in (1, 2, 3)}


def test_per_texture_folds_are_stratified(dagm_root: Path) -> None:
    samples = make_dm(dagm_root, classes=[3]).list_samples()
    assert len(samples) == 2 * N_PER_SPLIT
    for test in fold_test_sets(lambda fold: make_dm(dagm_root, classes=[3], fold=fold), samples):
        assert {s.label for s in test} == {0, 1}


def test_pooled_folds_are_stratified_by_texture_and_label(dagm_root: Path) -> None:
    samples = make_dm(dagm_root, classes=None, mode="pooled").list_samples()
    assert len(samples) == 3 * 2 * N_PER_SPLIT
    for test in fold_test_sets(lambda fold: make_dm(dagm_root, classes=None, mode="pooled", fold=fold), samples):
        strata = {(texture_of(s), s.label) for s in test}
        assert strata == {(f"Class{n}", k) for n in (1, 2, 3) for k in (0, 1)}


def test_setup_decodes_masks_matching_labels(dagm_root: Path) -> None:
    dm = make_dm(dagm_root, classes=[1], fold=0)
    dm.setup()
    for dataset in (dm.train_set, dm.test_set):
        assert torch.equal(all_masks(dataset).flatten(1).any(dim=1).float(), dataset.labels)
    assert dm.classes == ["defect_free", "defective"] and dm.textures == [1]
    batch = pair_batches(dm)[0]
    assert batch["label"].tolist() == [1.0, 0.0]


def test_per_texture_takes_the_only_texture_found(fresh_dagm: Path) -> None:
    assert len(make_dm(fresh_dagm, classes=None).list_samples()) == 6


def test_development_layout(tmp_path: Path) -> None:
    for folder, count in (("Class4", 3), ("Class4_def", 2)):
        (tmp_path / folder).mkdir()
        for i in range(1, count + 1):
            Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    samples = list_dagm_samples(tmp_path)
    assert [(s.name, s.label) for s in samples] == [
        ("Class4/1", 0), ("Class4/2", 0), ("Class4/3", 0), ("Class4_def/1", 1), ("Class4_def/2", 1)
    ]
    assert {texture_of(s) for s in samples} == {"Class4"}


def test_modes_and_textures_are_checked(dagm_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"per_texture takes exactly one texture, got classes=\[1, 2\]"):
        make_dm(dagm_root, classes=[1, 2])
    with pytest.raises(DatasetError, match=r"per_texture takes exactly one texture, got classes=\[1, 2, 3\]"):
        make_dm(dagm_root, classes=None).list_samples()
    with pytest.raises(DatasetError, match="mode must be one of"):
        make_dm(dagm_root, mode="mixed")
    with pytest.raises(DatasetError, match="Class7 not found"):
        list_dagm_samples(dagm_root, [7])
    with pytest.raises(DatasetError, match="no ClassN folders"):
        list_dagm_samples(dagm_root / "Class1")


def test_missing_labels_txt(fresh_dagm: Path) -> None:
    (fresh_dagm / "Class1" / "Test" / "Label" / "Labels.txt").unlink()
    with pytest.raises(DatasetError, match=r"Class1/Test/Label/Labels\.txt does not exist"):
        list_dagm_samples(fresh_dagm)


def test_labels_naming_a_missing_image(fresh_dagm: Path) -> None:
    write_labels(fresh_dagm, ["1", "1\t0\t0004.PNG\t0\t0", "2\t0\t0099.PNG\t0\t0"])
    with pytest.raises(DatasetError, match=r"Label/Labels\.txt line 3: image .*0099\.PNG does not exist"):
        list_dagm_samples(fresh_dagm)


def test_labels_naming_a_missing_label_image(fresh_dagm: Path) -> None:
    write_labels(fresh_dagm, ["1", "1\t1\t0004.PNG\t0\t0004_label.PNG"])
    with pytest.raises(DatasetError, match=r"Labels\.txt line 2: label image .*0004_label\.PNG does not"):
        list_dagm_samples(fresh_dagm)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2\t0\t0005.PNG\t0", "expected 5 tab-separated fields"),
        ("2\tyes\t0005.PNG\t0\t0", "defective flag 0 or 1"),
        ("two\t0\t0005.PNG\t0\t0", "integer index"),
        ("2\t1\t0004.PNG\t0\t0", "defective image 0004.PNG has no label image"),
    ],
)
def test_malformed_rows_name_file_and_line(fresh_dagm: Path, row: str, message: str) -> None:
    write_labels(fresh_dagm, ["1", "1\t0\t0004.PNG\t0\t0", "", row])
    with pytest.raises(DatasetError, match=rf"Train/Label/Labels\.txt line 4: .*{message}"):
        list_dagm_samples(fresh_dagm)


def test_config_instantiates(dagm_root: Path) -> None:
    cfg = compose_cfg(["data=dagm", f"data.root={dagm_root}", "data.classes=null", "data.mode=pooled"])
    assert list(cfg.data.image_size) == [512, 512]
    dm = instantiate(cfg.data, fold=1)
    assert isinstance(dm, DAGMDataModule) and dm.mode == "pooled" and dm.textures is None
    assert len(dm.list_samples()) == 3 * 2 * N_PER_SPLIT
    default = instantiate(compose_cfg(["data=dagm", f"data.root={dagm_root}"]).data)
    assert default.mode == "per_texture" and default.textures == [1]
