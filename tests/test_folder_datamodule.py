"""The folder DataModule (a user's own data: root/<class>/*.png, optional mirrored masks)."""

from __future__ import annotations

import collections
import csv
import json
import math
import os
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import default_collate

from datamodules import DatasetError, FolderDataModule, Sample, list_folder_samples
from datamodules.dataset import SampleDataset
from datamodules.synthetic import write_folder
from lightning_modules.weak import WeakDefectNet, WeakDetectionModule
from metrics.pixel import PixelMetrics
from tests.conftest import PROJECT_ROOT
from tests.helpers import all_masks, compose_cfg, fold_test_sets, pair_batches
from workflow.class_counts import class_counts, fill_class_counts
from workflow.run_warnings import module_warnings

CLASSES = ("good", "scratch", "dent")
PER_CLASS = 3


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("folder")
    root = write_folder(base / "images", classes=CLASSES, per_class=PER_CLASS, masks_root=base / "masks",
                        seed=6)
    return root, base / "masks"


def make_dm(root: Path, **kwargs) -> FolderDataModule:
    kwargs.setdefault("image_size", (32, 32))
    return FolderDataModule(root=root, **kwargs)


def test_classes_sorted_by_name_and_good_is_defect_free(folder_data) -> None:
    root, _ = folder_data
    samples = list_folder_samples(root)
    assert len(samples) == 3 * PER_CLASS
    assert make_dm(root).classes == ["dent", "good", "scratch"]
    assert {(s.name.split("/")[0], s.target, s.label) for s in samples} == {
        ("dent", 0, 1), ("good", 1, 0), ("scratch", 2, 1)
    }
    assert all(s.group == s.name and s.mask is None for s in samples)
    assert samples[0].name == "dent/000.png"


def test_a_defect_free_class_differing_in_case_is_an_error(folder_data) -> None:
    with pytest.raises(DatasetError, match=r"no class folder 'Good' under .*, but there is 'good'"):
        list_folder_samples(folder_data[0], defect_free_class="Good")


def test_without_the_defect_free_class_all_are_defective(folder_data) -> None:
    root, _ = folder_data
    with pytest.warns(UserWarning, match=r"no class folder 'ok' .* every image counts as defective.* no MDR"):
        assert all(s.label == 1 for s in list_folder_samples(root, defect_free_class="ok"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # null says there is no defect-free class: nothing to warn about
        assert all(s.label == 1 for s in list_folder_samples(root, defect_free_class=None))
    assert sum(1 - s.label for s in list_folder_samples(root, defect_free_class="dent")) == PER_CLASS


def test_masks_from_the_mirrored_tree(folder_data) -> None:
    root, masks = folder_data
    samples = list_folder_samples(root, masks_root=masks)
    for s in samples:
        if s.label:
            assert s.mask == masks / s.name.split("/")[0] / f"{s.image.stem}.png"
        else:
            assert s.mask is None
    dm = make_dm(root, masks_root=masks, fold=0)
    dm.setup()
    for dataset in (dm.train_set, dm.test_set):
        assert torch.equal(all_masks(dataset).flatten(1).any(dim=1).float(), dataset.labels)


def test_folds_are_stratified_by_class(folder_data) -> None:
    root, _ = folder_data
    samples = list_folder_samples(root)
    for test in fold_test_sets(lambda fold: make_dm(root, fold=fold), samples):
        assert sorted(s.target for s in test) == [0, 1, 2]


def test_training_batches_pair_defective_and_good(folder_data) -> None:
    root, _ = folder_data
    dm = make_dm(root, fold=1)
    dm.setup()
    batches = pair_batches(dm)
    assert len(batches) == PER_CLASS - 1
    assert all(b["label"].tolist() == [1.0, 0.0] for b in batches)


def test_extensions_are_case_insensitive_and_other_files_ignored(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", classes=("good", "crack"), per_class=1)
    pixels = np.zeros((8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "crack" / "upper.JPG")
    Image.fromarray(pixels).save(root / "crack" / "scan.TIFF")
    (root / "crack" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    masks = tmp_path / "masks" / "crack"
    masks.mkdir(parents=True)
    Image.fromarray(pixels).save(masks / "upper.bmp")
    samples = list_folder_samples(root, masks_root=tmp_path / "masks")
    assert collections.Counter(s.name.split("/")[0] for s in samples) == {"crack": 3, "good": 1}
    upper = next(s for s in samples if s.name == "crack/upper.JPG")
    assert upper.mask == masks / "upper.bmp"


def test_masks_root_inside_root_is_not_a_class(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_folder(root, classes=("good", "hole"), per_class=1, masks_root=root / "masks")
    dm = make_dm(root, masks_root=root / "masks")
    assert dm.classes == ["good", "hole"]
    assert [s.mask is not None for s in dm.list_samples()] == [False, True]


def test_masks_folder_inside_root_is_found_without_configuring_it(tmp_path: Path) -> None:
    """data=folder data.root=<root> with <root>/masks: masks read from it, and it is not a class."""
    root = tmp_path / "data"
    write_folder(root, classes=("good", "hole"), per_class=2, masks_root=root / "masks")
    dm = make_dm(root)
    assert dm.classes == ["good", "hole"]
    samples = dm.list_samples()
    assert [s.mask.relative_to(root).as_posix() if s.mask else None for s in samples] == [
        None, None, "masks/hole/000.png", "masks/hole/001.png"]
    with pytest.raises(DatasetError, match="elsewhere.*does not exist"):
        list_folder_samples(root, masks_root=tmp_path / "elsewhere")


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", classes=("good",), per_class=1)
    (root / "stain").mkdir()
    (root / "stain" / "readme.txt").write_text("")
    with pytest.raises(DatasetError, match=r"class folder .*data/stain holds no images"):
        list_folder_samples(root)


def test_no_class_folders_and_no_images(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"no class folders and no images under .*data"):
        list_folder_samples(tmp_path / "data")
    with pytest.raises(DatasetError, match=r"nowhere does not exist"):
        list_folder_samples(tmp_path / "nowhere")


def write_unsorted(root: Path, count: int, size: int = 8) -> Path:
    """``count`` images directly in ``root`` (no class folders), each a different noise texture."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / f"part{i:02d}.png")
    return root


def test_unsorted_images_are_read_as_one_set_without_classes(tmp_path: Path) -> None:
    root = write_unsorted(tmp_path / "data", 4)
    samples = list_folder_samples(root)
    assert [s.name for s in samples] == ["part00.png", "part01.png", "part02.png", "part03.png"]
    assert {(s.target, s.label, s.mask) for s in samples} == {(-1, 1, None)}
    assert make_dm(root).classes == []


def test_loose_images_beside_class_folders_are_ignored_with_a_warning(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", classes=("good", "hole"), per_class=1)
    write_unsorted(root, 2)
    with pytest.warns(UserWarning, match=r"2 image\(s\) directly in .*part00.png.*ignored"):
        samples = list_folder_samples(root)
    assert sorted(s.name for s in samples) == ["good/000.png", "hole/000.png"]


def test_unsorted_images_take_k_from_the_user(tmp_path: Path) -> None:
    """No classes to count: model.num_clusters is required, and the classes scored against are K of none."""
    root = write_unsorted(tmp_path / "data", 4)
    cfg = fill_class_counts(compose_cfg(["experiment=cluster_folder_cpu", f"data.root={root}",
                                         "model.num_clusters=3"]))
    assert (cfg.model.num_clusters, cfg.model.num_classes, cfg.model.defect_free_class) == (3, 3, None)
    with pytest.raises(DatasetError, match="set model.num_clusters=K"):
        fill_class_counts(compose_cfg(["experiment=cluster_folder_cpu", f"data.root={root}"]))


def test_config_instantiates(folder_data) -> None:
    root, masks = folder_data
    cfg = compose_cfg(["data=folder", f"data.root={root}", f"data.masks_root={masks}"])
    assert list(cfg.data.image_size) == [256, 256] and cfg.data.defect_free_class == "good"
    dm = instantiate(cfg.data, fold=2)
    assert isinstance(dm, FolderDataModule) and dm.masks_root == masks
    assert len(dm.list_samples()) == 3 * PER_CLASS


def test_class_counts_come_from_the_folders() -> None:
    """K = the number of class folders; the defect-free class is the one whose images are all defect-free."""
    def sample(target: int, label: int) -> Sample:
        return Sample(name=f"{target}/{label}", image=Path("x.png"), label=label, group="g", target=target)

    assert class_counts([sample(0, 1), sample(1, 0), sample(2, 1), sample(1, 0)]) == (3, 1)
    assert class_counts([sample(0, 1), sample(1, 1)]) == (2, None)  # no defect-free class (NEU)
    assert class_counts([sample(0, 0), sample(0, 1), sample(1, 1)]) == (2, None)  # mixed: none
    with pytest.raises(DatasetError, match="have no classes"):
        class_counts([sample(-1, 0)])


@pytest.mark.slow
def test_clustering_runs_on_a_users_folder(tmp_path: Path) -> None:
    """experiment=cluster_folder_cpu data.root=<folder>: K from the folders, MDR/FDR/EACC against `good`."""
    root = write_folder(tmp_path / "images", classes=("good", "scratch", "stain"), per_class=6,
                        masks_root=tmp_path / "images" / "masks")
    run_dir = tmp_path / "run"
    overrides = [
        "experiment=cluster_folder_cpu", f"data.root={root}", "data.image_size=[32,32]",
        "model.training_plan.views.global_size=32", "model.training_plan.views.local_size=32",
        "model.training_plan.views.n_local=2", "model.training_plan.batch_size=6", "model.max_steps=4",
        "model.warmup_steps=1", "callbacks.pseudo_labels.every_n_steps=2", "callbacks.pseudo_labels.pca_dim=4",
        "folds=[0]", "logger=csv", f"hydra.run.dir={run_dir}",
    ]
    out = subprocess.run([sys.executable, "train.py", *overrides], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env={**os.environ, "WANDB_MODE": "offline"}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    fold = json.loads((run_dir / "metrics.json").read_text())["folds"][0]
    assert fold["n_images"] == 6 and {"mdr", "fdr", "eacc"} <= set(fold)
    assert len(fold["confusion"]) == 3  # 3 clusters x 3 classes
    assert abs(fold["eacc"] - (fold["acc"] + fold["fdr"])) < 1e-6
    stored = torch.load(run_dir / "fold0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (stored["hyper_parameters"]["num_clusters"], stored["hyper_parameters"]["defect_free_class"]) == (3, 0)


@pytest.mark.slow
def test_clustering_runs_on_unsorted_images(tmp_path: Path) -> None:
    """experiment=cluster_folder_cpu on images in no class folder, K given: each fold reports the sizes of its
    clusters (no ACC: there are no classes) and writes every test image's cluster."""
    root = write_unsorted(tmp_path / "images", 12, size=32)
    run_dir = tmp_path / "run"
    overrides = [
        "experiment=cluster_folder_cpu", f"data.root={root}", "model.num_clusters=2", "data.image_size=[32,32]",
        "model.training_plan.views.global_size=32", "model.training_plan.views.local_size=32",
        "model.training_plan.views.n_local=2", "model.training_plan.batch_size=4", "model.max_steps=4",
        "model.warmup_steps=1", "callbacks.pseudo_labels.every_n_steps=2", "callbacks.pseudo_labels.pca_dim=4",
        "callbacks.pseudo_labels.descriptor=null", "folds=[0]", "logger=csv", f"hydra.run.dir={run_dir}",
    ]
    out = subprocess.run([sys.executable, "train.py", *overrides], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env={**os.environ, "WANDB_MODE": "offline"}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    fold = report["folds"][0]
    assert "acc" not in fold and "acc" not in report["pooled"]
    assert fold["n_images"] == 4 and sum(fold["cluster_sizes"]) == 4 and len(fold["cluster_sizes"]) == 2
    assert fold["largest_cluster_share"] == max(fold["cluster_sizes"]) / 4
    assert fold["empty_clusters"] == fold["cluster_sizes"].count(0) == report["pooled"]["empty_clusters"]
    with open(run_dir / "fold0" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {r["cluster"] for r in rows} <= {"0", "1"}


def test_a_defective_image_without_a_mask_is_left_out_of_the_pixel_metrics(tmp_path: Path) -> None:
    """A partly annotated folder: an empty mask would count that image's defect as defect-free pixels."""
    root = write_folder(tmp_path / "images", classes=("crack", "good"), per_class=3, masks_root=tmp_path / "masks",
                        seed=2)
    missing = sorted((tmp_path / "masks" / "crack").iterdir())[0]
    missing.unlink()
    samples = list_folder_samples(root, masks_root=tmp_path / "masks")
    assert [(s.name.split("/")[0], s.mask_known) for s in samples] == [
        ("crack", False), ("crack", True), ("crack", True), ("good", True), ("good", True), ("good", True)]
    dataset = SampleDataset(samples, (32, 32))
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    assert batch["mask_known"].tolist() == [False, True, True, True, True, True]

    torch.manual_seed(0)
    stages = [{"name": "localization", "iterations": 1, "lr": 0.1, "train": ["trunk", "lnet"], "losses": ["weak"]}]
    module = WeakDetectionModule(WeakDefectNet(lnet_wide=8), partial(torch.optim.SGD), stages=stages,
                                 heatmap_dir=None).eval()
    with torch.no_grad():
        module.test_step(batch, 0, dataloader_idx=1)
        heat, _ = module.net(batch["image"])
    full = torch.nn.functional.interpolate(heat, size=(32, 32), mode="bilinear", align_corners=False)
    expected = PixelMetrics()
    expected.update(full[1:], batch["mask"][1:], batch["index"][1:])
    assert module.pixel_metrics.compute() == pytest.approx(expected.compute())
    assert module.pixel_metrics.compute()["pixel_images"] == 5


def test_pixel_metrics_are_nan_without_defect_pixels() -> None:
    """No known mask holds a defect (a dataset without masks): there is nothing to rank, not a score of 0."""
    metric = PixelMetrics()
    metric.update(torch.rand(3, 1, 8, 8), torch.zeros(3, 1, 8, 8), torch.arange(3))
    result = metric.compute()
    assert math.isnan(result["pixel_auroc"]) and math.isnan(result["pixel_ap"]) and result["pixel_images"] == 3


def test_the_faint_defect_folder_reads_as_a_folder_with_a_mask_on_every_defective_image(tmp_path: Path) -> None:
    """benchmarks/faint_defects.py (the synthetic folder where the weak stage 1 went dark) writes data=folder's
    layout: defect-free images under good/, five defect classes, a non-empty mask inside each defective image."""
    from tests.helpers import load_benchmark

    root = load_benchmark("faint_defects").write_faint_defects(tmp_path / "faint", images=40, seed=1)
    samples = list_folder_samples(root)
    defective = [s for s in samples if s.label == 1]
    assert len(samples) == 40 and 0 < len(defective) < 40
    assert {s.image.parent.name for s in defective} <= {"blob_dark", "blob_bright", "scratch", "pits", "smudge"}
    for s in defective:
        mask = np.asarray(Image.open(s.mask))
        image = np.asarray(Image.open(s.image))
        assert mask.shape == image.shape and 0 < (mask > 0).mean() < 0.2
        assert 100 <= min(image.shape) and max(image.shape) <= 400


def test_images_blown_up_more_than_2x_are_named(folder_data) -> None:
    """32x32 images at data.image_size [80, 64]: 2.5x up in height, a warning that counts them and names the most
    blown-up one; at twice their size (64x64) nothing is said."""
    root, _ = folder_data
    n = len(CLASSES) * PER_CLASS
    with pytest.warns(UserWarning, match=rf"{n} of {n} images are resized up more than 2x in a side to "
                                         r"data.image_size=\[80,64\] \(the most: .*\.png, 32x32, 2\.5x\)"):
        make_dm(root, image_size=(80, 64)).setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_dm(root, image_size=(64, 64)).setup()
    # in a run (a trainer with its module attached) it is also one of the run's warnings, for metrics.json
    module, dm = SimpleNamespace(), make_dm(root, image_size=(80, 64))
    dm.trainer = SimpleNamespace(lightning_module=module)
    with pytest.warns(UserWarning, match="resized up"):
        dm.setup()
    assert len(module_warnings(module)) == 1 and "resized up more than 2x" in module_warnings(module)[0]
