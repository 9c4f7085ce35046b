"""The Severstal DataModule on generated data in the Kaggle layout (train.csv + train_images/)."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from datamodules import DatasetError, SeverstalDataModule, list_severstal_samples
from datamodules.rle import rle_decode, rle_encode
from datamodules.samples import decode_sample
from datamodules.severstal import read_steel_split, read_steel_split_parts
from datamodules.synthetic import write_severstal
from tests.conftest import SHARED_DATASETS
from tests.helpers import all_masks, compose_cfg, fold_test_sets

SHAPE = (32, 200)
N_CLEAN, N_PER_CLASS, N_MULTI = 6, 3, 1


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[int, np.ndarray]]]:
    root = tmp_path_factory.mktemp("severstal") / "Severstal"
    masks = write_severstal(root, n_clean=N_CLEAN, n_per_class=N_PER_CLASS, n_multi=N_MULTI, size=SHAPE,
                            seed=3)
    return root, masks


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A small dataset of the test's own (1 clean + 1 per class), free to damage."""
    root = tmp_path / "Severstal"
    write_severstal(root, n_clean=1, n_per_class=1, n_multi=0, size=SHAPE, seed=4)
    return root


def make_dm(root: Path, **kwargs) -> SeverstalDataModule:
    kwargs.setdefault("image_size", SHAPE)
    kwargs.setdefault("image_shape", SHAPE)
    return SeverstalDataModule(root=root, **kwargs)


def listing(root: Path, **kwargs):
    kwargs.setdefault("image_shape", SHAPE)
    return list_severstal_samples(root, **kwargs)


def append_row(root: Path, row: str) -> int:
    """Append a row to train.csv; returns its line number."""
    csv_path = root / "train.csv"
    lines = csv_path.read_text().splitlines() + [row]
    csv_path.write_text("\n".join(lines) + "\n")
    return len(lines)


def test_five_classes_by_largest_area(generated) -> None:
    root, masks = generated
    samples = listing(root)
    assert len(samples) == N_CLEAN + 4 * N_PER_CLASS + 2 * N_MULTI
    counts = collections.Counter(s.target for s in samples)
    # the multi-class images (1 small + 2 large, 3 small + 4 large) go to classes 2 and 4
    assert counts == {0: N_CLEAN, 1: N_PER_CLASS, 2: N_PER_CLASS + 1, 3: N_PER_CLASS, 4: N_PER_CLASS + 1}
    assert all(s.label == int(s.target > 0) for s in samples)
    assert {f"{s.name}.jpg" for s in samples if s.label} == set(masks)
    assert all(s.mask_rle is None for s in samples if not s.label)
    assert all(s.group == s.name and "." not in s.name for s in samples)


def test_first_rule_takes_the_lowest_class(generated) -> None:
    root, _ = generated
    counts = collections.Counter(s.target for s in listing(root, multi_class_rule="first"))
    assert counts == {0: N_CLEAN, 1: N_PER_CLASS + 1, 2: N_PER_CLASS, 3: N_PER_CLASS + 1, 4: N_PER_CLASS}


def test_two_classes(generated) -> None:
    root, _ = generated
    samples = listing(root, num_classes=2)
    assert all(s.target == s.label for s in samples)
    assert sum(s.label for s in samples) == 4 * N_PER_CLASS + 2 * N_MULTI
    assert make_dm(root, num_classes=2).classes == ["defect_free", "defective"]
    assert make_dm(root).classes == ["defect_free", "class_1", "class_2", "class_3", "class_4"]


def test_rle_is_one_indexed_and_column_major_by_hand() -> None:
    """Hand-computed, not a round trip: pixel k (1-indexed) is row (k-1) % H, column (k-1) // H."""
    expected = np.zeros((4, 5), dtype=bool)
    expected[0:3, 0] = True  # pixels 1..3: column 0, rows 0-2
    expected[1:3, 1] = True  # pixels 6..7: column 1, rows 1-2
    assert np.array_equal(rle_decode("1 3 6 2", (4, 5)), expected)
    assert rle_encode(expected) == "1 3 6 2"
    steel = rle_decode("1 256 513 2 409599 2", (256, 1600))  # Severstal's 256x1600
    assert steel[:, 0].all() and not steel[:, 1].any() and steel[0:2, 2].all() and steel.sum() == 256 + 2 + 2
    assert steel[254:256, 1599].all()  # the last two pixels of the image


def test_rle_decodes_to_the_union_of_the_generated_masks(generated) -> None:
    root, masks = generated
    for sample in listing(root):
        image, mask = decode_sample(sample, SHAPE)
        assert image.shape == (1, *SHAPE)
        expected = np.zeros(SHAPE, dtype=bool)
        for m in masks.get(f"{sample.name}.jpg", {}).values():
            expected |= m
        assert np.array_equal(mask[0].numpy(), expected), sample.name
        assert expected.any() == bool(sample.label)


def test_folds_are_disjoint_and_stratified_by_class(generated) -> None:
    root, _ = generated
    samples = listing(root)
    for test in fold_test_sets(lambda fold: make_dm(root, fold=fold), samples):
        assert {s.target for s in test} == {0, 1, 2, 3, 4}


def test_setup_masks_match_labels(generated) -> None:
    root, _ = generated
    dm = make_dm(root, fold=0)
    dm.setup()
    has_defect = all_masks(dm.test_set).flatten(1).any(dim=1).float()
    assert has_defect.tolist() == dm.test_set.labels.tolist()


def test_paper_subset_is_seeded_and_sized(generated) -> None:
    root, _ = generated
    picks = []
    for seed in (0, 0, 1):
        dm = make_dm(root, paper_subset=True, subset_clean=3, subset_per_class=2, seed=seed)
        samples = dm.list_samples()
        assert collections.Counter(s.target for s in samples) == {0: 3, 1: 2, 2: 2, 3: 2, 4: 2}
        picks.append([s.name for s in samples])
    assert picks[0] == picks[1] and picks[0] != picks[2]
    two = make_dm(root, num_classes=2, paper_subset=True, subset_clean=3, subset_per_class=2).list_samples()
    assert [s.name for s in two] == picks[0] and collections.Counter(s.target for s in two) == {0: 3, 1: 8}


def test_paper_subset_needs_enough_images(generated) -> None:
    root, _ = generated
    with pytest.raises(DatasetError, match="paper_subset needs 300 defect-free images but only 6"):
        make_dm(root, paper_subset=True).list_samples()
    with pytest.raises(DatasetError, match="paper_subset needs 5 class 1 images but only 3"):
        make_dm(root, paper_subset=True, subset_clean=2, subset_per_class=5).list_samples()


def test_split_file_restricts_the_images(generated, tmp_path: Path) -> None:
    root, _ = generated
    names = sorted(s.name for s in listing(root))
    split = tmp_path / "split_3_3.pyb"
    content = ([(names[0], True), (names[1], False)], [(names[5], True)], [(names[9], True)])
    split.write_bytes(pickle.dumps(content))
    samples = make_dm(root, split_file=split).list_samples()
    assert [s.name for s in samples] == [names[0], names[1], names[5], names[9]]


def test_split_file_is_the_split(generated, tmp_path: Path) -> None:
    """As the reference code uses it: its training, test and validation images, one fold."""
    root, _ = generated
    names = sorted(s.name for s in listing(root))
    split = tmp_path / "split_3_3.pyb"
    split.write_bytes(pickle.dumps(([(n, True) for n in names[:6]], [(n, True) for n in names[6:10]],
                                    [(n, False) for n in names[10:12]])))
    dm = make_dm(root, split_file=split, num_folds=1, val_fraction=0.5)  # the file's validation images win
    dm.setup()
    assert sorted(s.name for s in dm.train_samples) == names[:6]
    assert sorted(s.name for s in dm.test_samples) == names[6:10]
    assert sorted(s.name for s in dm.val_samples) == names[10:12]
    with pytest.raises(DatasetError, match=r"split_3_3\.pyb is one train/test split: set data.num_folds=1"):
        make_dm(root, split_file=split).setup()


def test_split_file_naming_a_missing_image(generated, tmp_path: Path) -> None:
    root, _ = generated
    split = tmp_path / "split_1_1.pyb"
    split.write_bytes(pickle.dumps(([("ffffffff0", True)], [], [])))
    with pytest.raises(DatasetError, match=r"split_1_1\.pyb names 1 images not in .*ffffffff0"):
        make_dm(root, split_file=split).list_samples()
    split.write_bytes(pickle.dumps(([("a", True)], [])))
    with pytest.raises(DatasetError, match=r"split_1_1\.pyb is not a STEEL"):
        make_dm(root, split_file=split).list_samples()


def test_old_kaggle_format_is_read(small: Path) -> None:
    new = listing(small)
    rows = (small / "train.csv").read_text().splitlines()[1:]
    by_key = {(r.split(",")[0], r.split(",")[1]): r.split(",")[2] for r in rows}
    old = ["ImageId_ClassId,EncodedPixels"]
    for sample in new:
        for c in range(1, 5):
            old.append(f"{sample.image.name}_{c},{by_key.get((sample.image.name, str(c)), '')}")
    (small / "train.csv").write_text("\n".join(old) + "\n")
    def key(samples):
        return [(s.name, s.target, s.mask_rle) for s in samples]

    assert key(listing(small)) == key(new)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{image},1", "expected 3 columns"),
        ("{image},1,1 3,extra", "expected 3 columns"),
        ("{image},x,1 3", "invalid literal"),
        ("{image},5,1 3", "ClassId 5 is not one of 1, 2, 3, 4"),
        ("{image},1,1 3 5", "odd number of values"),
        ("{image},1,1 a", "non-integer value"),
        ("{image},1,0 3", "non-positive start or length"),
        ("{image},1,6399 3", r"goes beyond the 200x32 image"),
        ("{image},1,9223372036854775807 2", r"goes beyond the 200x32 image"),  # would wrap around in int64
        ("{image},1,2 9223372036854775807", r"goes beyond the 200x32 image"),
        ("{image},1,99999999999999999999 1", r"goes beyond the 200x32 image"),  # beyond int64 altogether
    ],
)
def test_malformed_rows_name_file_and_line(small: Path, row: str, message: str) -> None:
    image = sorted((small / "train_images").iterdir())[0].name
    line = append_row(small, row.format(image=image))
    with pytest.raises(DatasetError, match=rf"train\.csv line {line}: .*{message}"):
        listing(small)


def test_a_byte_order_mark_is_accepted(small: Path) -> None:
    """Excel saves CSV files as UTF-8 with a byte-order mark before the header."""
    expected = [(s.name, s.target, s.mask_rle) for s in listing(small)]
    csv_path = small / "train.csv"
    csv_path.write_text("\ufeff" + csv_path.read_text(), encoding="utf-8")
    assert [(s.name, s.target, s.mask_rle) for s in listing(small)] == expected


def test_rle_is_validated_against_image_shape(small: Path) -> None:
    image = sorted((small / "train_images").iterdir())[0].name
    line = append_row(small, f"{image},2,6400 2")  # the last pixel of 32x200 and one beyond: fine at 256x1600
    assert len(listing(small, image_shape=(256, 1600))) == 5
    with pytest.raises(DatasetError, match=rf"train\.csv line {line}: run \(6400, 2\) goes beyond"):
        listing(small)


def test_row_naming_a_missing_image(small: Path) -> None:
    line = append_row(small, "deadbeef0.jpg,3,1 4")
    with pytest.raises(DatasetError, match=rf"train\.csv line {line}: image deadbeef0\.jpg is not in"):
        listing(small)


def test_bad_header_and_missing_files(small: Path, tmp_path: Path) -> None:
    csv_path = small / "train.csv"
    csv_path.write_text("Image,Class,Pixels\n")
    with pytest.raises(DatasetError, match=r"train\.csv line 1: expected the header"):
        listing(small)
    csv_path.unlink()
    with pytest.raises(DatasetError, match=r"train\.csv does not exist"):
        listing(small)
    with pytest.raises(DatasetError, match="no train_images folder"):
        listing(tmp_path)


def test_bad_options() -> None:
    with pytest.raises(DatasetError, match="num_classes must be 2 or 5"):
        SeverstalDataModule(root="x", num_classes=3)
    with pytest.raises(DatasetError, match="multi_class_rule must be one of"):
        SeverstalDataModule(root="x", multi_class_rule="biggest")


def test_config_instantiates(generated) -> None:
    root, _ = generated
    cfg = compose_cfg(["data=severstal", f"data.root={root}", "data.image_shape=[32,200]",
                       "data.num_classes=2"])
    assert list(cfg.data.image_size) == [256, 1600] and cfg.data.multi_class_rule == "largest_area"
    dm = instantiate(cfg.data, fold=1)
    assert isinstance(dm, SeverstalDataModule) and dm.num_classes == 2 and dm.image_shape == SHAPE
    assert len(dm.list_samples()) == N_CLEAN + 4 * N_PER_CLASS + 2 * N_MULTI


@pytest.mark.real_data
def test_real_steel_split_files_load() -> None:
    split = SHARED_DATASETS / "splits" / "STEEL" / "split_300_300.pyb"
    if not split.is_file():
        pytest.skip(f"{split} not found")
    names = read_steel_split(split)
    assert len(names) > 1000 and all(len(n) == 9 and "." not in n for n in names)
    train, test, validation = map(set, read_steel_split_parts(split))  # three disjoint parts: a split
    assert (len(train), len(test), len(validation)) == (4443, 2400, 1118) and not (train & test | train & validation
                                                                                 | test & validation)
