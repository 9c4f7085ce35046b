"""The NEU DataModule on generated NEU-CLS and NEU-DET layouts, and on the real NEU-DET when present."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from datamodules import DatasetError, NEUDataModule, list_neu_samples, read_voc_boxes
from datamodules.neu import NEU_CLASSES
from datamodules.samples import decode_sample
from datamodules.synthetic import write_neu_cls, write_neu_det
from tests.helpers import all_masks, compose_cfg

PER_CLASS = 3


@pytest.fixture(scope="module")
def neu_cls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_neu_cls(tmp_path_factory.mktemp("neu") / "NEU-CLS", per_class=PER_CLASS, seed=1)


@pytest.fixture(scope="module")
def neu_det(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_neu_det(tmp_path_factory.mktemp("neu") / "NEU-DET", per_class=PER_CLASS, seed=2)


def make_dm(root: Path, **kwargs) -> NEUDataModule:
    kwargs.setdefault("image_size", (32, 32))
    return NEUDataModule(root=root, **kwargs)


def test_cls_layout_lists_every_image_with_its_class(neu_cls: Path) -> None:
    samples = list_neu_samples(neu_cls)
    assert len(samples) == 6 * PER_CLASS
    assert collections.Counter(s.target for s in samples) == {k: PER_CLASS for k in range(6)}
    assert all(s.label == 1 and s.mask is None and s.group == s.name for s in samples)
    by_name = {s.name: s.target for s in samples}
    assert by_name["Cr_1"] == 0 and by_name["PS_2"] == 3 and by_name["RS_3"] == 4 and by_name["Sc_1"] == 5


def test_cls_layout_in_a_single_subfolder(tmp_path: Path) -> None:
    write_neu_cls(tmp_path / "NEU surface defect database", per_class=1)
    samples = list_neu_samples(tmp_path)
    assert sorted(s.target for s in samples) == list(range(6))


def test_det_layout_takes_the_longest_class_name(neu_det: Path) -> None:
    samples = list_neu_samples(neu_det)
    assert len(samples) == 6 * PER_CLASS
    by_name = {s.name: s.target for s in samples}
    assert by_name["pitted_surface_1"] == NEU_CLASSES.index("pitted_surface")
    assert by_name["rolled-in_scale_2"] == NEU_CLASSES.index("rolled-in_scale")
    assert by_name["crazing_3"] == 0
    assert [s.name for s in samples if s.target == 0] == ["crazing_1", "crazing_2", "crazing_3"]


def test_det_boxes_are_parsed_but_not_masks(neu_det: Path) -> None:
    dm = make_dm(neu_det)
    sample = next(s for s in dm.list_samples() if s.name == "scratches_2")
    boxes = dm.boxes(sample)
    assert len(boxes) == 1
    xmin, ymin, xmax, ymax = boxes[0]
    assert 0 <= xmin < xmax <= 32 and 0 <= ymin < ymax <= 32
    assert sample.mask is None and sample.mask_rle is None


def test_folds_are_stratified_by_class_and_disjoint(neu_det: Path) -> None:
    samples = list_neu_samples(neu_det)
    tests = []
    for fold in range(3):
        train, test = make_dm(neu_det, fold=fold).split(samples)
        assert not {s.name for s in train} & {s.name for s in test}
        assert len(train) + len(test) == len(samples)
        assert sorted(s.target for s in test) == list(range(6))  # one image of each class per test fold
        tests.append({s.name for s in test})
    assert set.union(*tests) == {s.name for s in samples}


def test_setup_decodes_images_and_empty_masks(neu_cls: Path) -> None:
    dm = make_dm(neu_cls, fold=1, image_size=(24, 24))
    dm.setup()
    assert dm.test_set.stacked_images().shape == (6, 1, 24, 24)
    assert not all_masks(dm.test_set).any()
    assert torch.equal(dm.test_set.labels, torch.ones(6))
    assert dm.classes == NEU_CLASSES


def test_missing_annotation_and_orphan_xml_are_fine(tmp_path: Path) -> None:
    root = write_neu_det(tmp_path / "NEU-DET", per_class=1)
    (root / "ANNOTATIONS" / "inclusion_1.xml").unlink()
    (root / "ANNOTATIONS" / "patches_99.xml").write_text("<annotation></annotation>")
    dm = make_dm(root)
    samples = dm.list_samples()
    assert len(samples) == 6
    assert dm.boxes(next(s for s in samples if s.name == "inclusion_1")) == []


def test_unknown_cls_prefix_names_the_file(tmp_path: Path) -> None:
    root = write_neu_cls(tmp_path / "NEU-CLS", per_class=1)
    (root / "Cr_1.bmp").rename(root / "Xy_7.bmp")
    with pytest.raises(DatasetError, match=r"Xy_7\.bmp has an unknown class prefix"):
        list_neu_samples(root)


def test_unknown_det_class_names_the_file(tmp_path: Path) -> None:
    root = write_neu_det(tmp_path / "NEU-DET", per_class=1)
    (root / "IMAGES" / "crazing_1.jpg").rename(root / "IMAGES" / "dents_1.jpg")
    with pytest.raises(DatasetError, match=r"dents_1\.jpg does not start with a class name"):
        list_neu_samples(root)


def test_malformed_xml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "crazing_1.xml"
    bad.write_text("<annotation><object><bndbox><xmin>1</xmin>")
    with pytest.raises(DatasetError, match=r"cannot read VOC annotation .*crazing_1\.xml"):
        read_voc_boxes(bad)
    bad.write_text("<annotation><object><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>x</xmax>"
                   "<ymax>4</ymax></bndbox></object></annotation>")
    with pytest.raises(DatasetError, match=r"crazing_1\.xml: box 1 has no numeric <xmax>"):
        read_voc_boxes(bad)


def test_folder_without_neu_images(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(DatasetError, match="no NEU images under"):
        list_neu_samples(tmp_path)


def test_config_instantiates(neu_det: Path) -> None:
    cfg = compose_cfg(["data=neu", f"data.root={neu_det}", "data.archive=null"])
    assert list(cfg.data.image_size) == [200, 200]
    dm = instantiate(cfg.data, fold=2)
    assert isinstance(dm, NEUDataModule) and dm.fold == 2
    assert len(dm.list_samples()) == 6 * PER_CLASS


@pytest.mark.real_data
def test_real_neu_det_counts_and_stratified_folds(shared_datasets: Path, tmp_path: Path) -> None:
    archive = shared_datasets / "NEU-DET.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} not found")
    root = tmp_path / "NEU-DET"
    dm = NEUDataModule(root=root, archive=archive, image_size=(50, 50))
    dm.prepare_data()
    samples = dm.list_samples()
    assert len(samples) == 1800
    assert collections.Counter(s.target for s in samples) == {k: 300 for k in range(6)}
    seen: set[str] = set()
    for fold in range(3):
        _, test = NEUDataModule(root=root, archive=archive, fold=fold).split(samples)
        assert len(test) == 600
        assert collections.Counter(s.target for s in test) == {k: 100 for k in range(6)}
        seen |= {s.name for s in test}
    assert len(seen) == 1800
    image, mask = decode_sample(samples[0], (50, 50))
    assert image.shape == (1, 50, 50) and not mask.any()
    assert len(dm.boxes(samples[0])) >= 1
