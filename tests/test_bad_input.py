"""Bad input gets a clear error naming the file, with nothing half-written."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import DatasetError, KolektorSDDDataModule
from datamodules.splits import ksdd_split_from_pickle, load_split_pickle
from tests.test_kolektor_datamodule import make_dm


def test_missing_root_says_where_to_get_the_dataset(tmp_path: Path) -> None:
    dm = KolektorSDDDataModule(root=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"nowhere.*vicos\.si"):
        dm.prepare_data()
    with pytest.raises(DatasetError, match="nowhere"):
        dm.setup()


def test_image_without_mask(fresh_kolektor: Path) -> None:
    (fresh_kolektor / "kos02" / "Part1_label.bmp").unlink()
    with pytest.raises(DatasetError, match=r"kos02/Part1\.jpg has no mask"):
        make_dm(fresh_kolektor).setup()


def test_mask_of_another_size(fresh_kolektor: Path) -> None:
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(fresh_kolektor / "kos03" / "Part2_label.bmp")
    dm = make_dm(fresh_kolektor)
    with pytest.raises(DatasetError, match=r"kos03/Part2_label\.bmp is 10x10"):
        dm.setup()


def test_unreadable_image(fresh_kolektor: Path) -> None:
    (fresh_kolektor / "kos04" / "Part0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot read image .*kos04/Part0\.jpg"):
        make_dm(fresh_kolektor).setup()


def test_num_defective_larger_than_available(fresh_kolektor: Path) -> None:
    with pytest.raises(DatasetError, match=r"num_defective=99 but fold 0 has only \d+"):
        make_dm(fresh_kolektor, num_defective=99).setup()


@pytest.mark.parametrize("fold", [-1, 3])
def test_fold_out_of_range(fresh_kolektor: Path, fold: int) -> None:
    with pytest.raises(DatasetError, match=rf"fold {fold} is out of range"):
        make_dm(fresh_kolektor, fold=fold)


def test_folder_without_kolektor_layout(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no kosNN folders"):
        make_dm(tmp_path / "empty").setup()


def test_split_pickle_refuses_globals(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pyb"
    evil.write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(DatasetError, match="refusing to load global"):
        load_split_pickle(evil)


def test_split_pickle_of_plain_lists_loads(tmp_path: Path) -> None:
    path = tmp_path / "split_1_1.pyb"
    path.write_bytes(pickle.dumps(([[("kos01", True)]] * 3, [["kos02"], ["kos03"], ["kos04"]])))
    train, test = ksdd_split_from_pickle(path)
    assert train == [["kos01"]] * 3 and test == [["kos02"], ["kos03"], ["kos04"]]
