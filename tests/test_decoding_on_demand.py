"""Images decoded when an item is read, a bounded cache, 16-bit images, one image-suffix list, and the training plans
the DataModule takes from the attached module."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import datamodules.dataset as dataset_module
from datamodules import DatasetError, KolektorSDDDataModule
from datamodules.decoded_cache import DecodedCache
from datamodules.image_files import IMAGE_SUFFIXES, image_files, load_image
from datamodules.samples import read_gray
from datamodules.views import MultiCropViews
from lightning_modules.cluster.plan import PseudoLabelViews
from lightning_modules.weak.plan import BalancedPairs
from tests.conftest import PROJECT_ROOT


def make_dm(root: Path, **kwargs) -> KolektorSDDDataModule:
    return KolektorSDDDataModule(root=root, official_split=False, image_size=(64, 32), **kwargs)


@pytest.fixture
def decode_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many samples were decoded (every call of the dataset's decoder)."""
    calls = [0]
    real = dataset_module.decode_sample

    def counting(sample, size):  # noqa: ANN001, ANN202
        calls[0] += 1
        return real(sample, size)

    monkeypatch.setattr(dataset_module, "decode_sample", counting)
    return calls


def test_setup_decodes_nothing_and_items_decode_on_read(kolektor_root: Path, decode_count: list[int]) -> None:
    dm = make_dm(kolektor_root, cache="none")
    dm.setup()
    assert decode_count[0] == 0
    assert dm.train_set.labels.sum() > 0 and len(dm.train_set.targets) == len(dm.train_set)  # from the table
    dm.test_set[0]
    dm.test_set[0]
    assert decode_count[0] == 2  # cache=none: decoded at every read


def test_the_cache_keeps_at_most_its_size(kolektor_root: Path, decode_count: list[int]) -> None:
    per_sample = 64 * 32 * 2  # a uint8 image and a bool mask of 64x32
    dm = make_dm(kolektor_root, cache="ram", cache_max_gib=2.5 * per_sample / 2**30)
    dm.setup()
    n = len(dm.test_set)
    for _ in range(2):
        for i in range(n):
            dm.test_set[i]
    assert len(dm.cache) == 2 and dm.cache.nbytes == 2 * per_sample <= dm.cache.max_bytes
    assert decode_count[0] == n + (n - 2)  # the second pass read the two kept samples from RAM
    unbounded = make_dm(kolektor_root, cache="ram")
    unbounded.setup()
    for i in range(n):
        unbounded.test_set[i]
    assert len(unbounded.cache) == n and unbounded.cache.nbytes == n * per_sample


def test_a_loaders_workers_share_the_cache_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """With W loader workers each keeps at most 1/W of data.cache_max_gib, so together they keep at most all of it."""
    import datamodules.decoded_cache as cache_module

    cache = DecodedCache(max_bytes=4000)
    assert cache.budget() == 4000
    monkeypatch.setattr(cache_module, "get_worker_info", lambda: SimpleNamespace(num_workers=4))
    assert cache.budget() == 1000
    for key in range(3):  # 400 bytes each: two fit in a worker's 1000
        cache.get(key, lambda: (torch.zeros(100, dtype=torch.float32),))
    assert len(cache) == 2 and cache.nbytes == 800


def test_items_are_the_same_with_and_without_the_cache(kolektor_root: Path) -> None:
    sets = []
    for cache in ("none", "ram"):
        dm = make_dm(kolektor_root, fold=1, cache=cache)
        dm.setup()
        dm.test_set.preload()
        sets.append(dm.test_set)
    plain, cached = sets
    assert len(plain) == len(cached) > 0
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a.keys() == b.keys() and a["name"] == b["name"]
        assert all(torch.equal(a[k], b[k]) for k in ("image", "mask", "mask_known", "label", "target"))
        assert a["image"].dtype == torch.float32 and a["mask"].dtype == torch.bool


def test_bad_cache_settings_are_named(kolektor_root: Path) -> None:
    with pytest.raises(ValueError, match="data.cache must be one of none, ram"):
        make_dm(kolektor_root, cache="disk")
    with pytest.raises(ValueError, match="data.cache_max_gib"):
        make_dm(kolektor_root, cache_max_gib=-1)
    assert DecodedCache.from_config("none", 1.0) is None


# -- training plans -----------------------------------------------------------------------------------------------
def attach(dm: KolektorSDDDataModule, module: object) -> None:
    dm.trainer = SimpleNamespace(lightning_module=module, world_size=1, global_rank=0, training=True, global_step=0)


def test_the_datamodule_asks_the_modules_plan_for_training_batches(kolektor_root: Path) -> None:
    dm = make_dm(kolektor_root)
    dm.setup()
    attach(dm, SimpleNamespace(training_plan=BalancedPairs(pairs_per_batch=2)))
    batches = list(dm.train_dataloader())
    clean = int((dm.train_set.labels == 0).sum())
    assert len(batches) == -(-clean // 2)
    assert all(b["label"].tolist() == [1.0, 0.0] * (len(b["label"]) // 2) for b in batches)
    assert sorted(int(i) for b in batches for i in b["index"][1::2]) == torch.nonzero(
        dm.train_set.labels == 0).flatten().tolist()
    attach(dm, SimpleNamespace())
    with pytest.raises(ValueError, match="model.training_plan"):
        dm.train_dataloader()
    with pytest.raises(ValueError, match="pairs_per_batch must be >= 1"):
        BalancedPairs(0)


def test_test_loaders_follow_the_modules_tests_training_images(kolektor_root: Path) -> None:
    dm = make_dm(kolektor_root, fold=2)
    dm.setup()
    assert [len(loader.dataset) for loader in dm.test_dataloader()] == [len(dm.train_set), len(dm.test_set)]
    attach(dm, SimpleNamespace(tests_training_images=False))
    assert [len(loader.dataset) for loader in dm.test_dataloader()] == [len(dm.test_set)]


def test_pseudo_label_views_reach_workers_and_are_re_read_before_transfer(kolektor_root: Path) -> None:
    dm = make_dm(kolektor_root, num_workers=1)
    dm.setup()
    plan = PseudoLabelViews(MultiCropViews(16, 8, 1, 1), batch_size=4)
    attach(dm, SimpleNamespace(training_plan=plan))
    loader = dm.train_dataloader()
    n = len(dm.train_set)
    first = next(iter(loader))
    assert not bool(first["pseudo_label"].any())
    assert [tuple(v.shape) for v in first["views"]] == [(4, 1, 16, 16), (4, 1, 8, 8)]
    plan.set_pseudo_labels(torch.arange(n) % 3)  # the worker was started: it must see the shared tensor change
    batch = next(iter(loader))
    assert torch.equal(batch["pseudo_label"], batch["index"] % 3)
    stale = {"pseudo_label": torch.zeros(4, dtype=torch.long), "index": batch["index"]}
    assert torch.equal(dm.on_before_batch_transfer(stale, 0)["pseudo_label"], batch["index"] % 3)
    with pytest.raises(ValueError, match="pseudo-labels for"):
        plan.set_pseudo_labels(torch.zeros(n + 1))


# -- 16-bit and float images --------------------------------------------------------------------------------------
def test_a_16_bit_png_is_scaled_by_its_own_range(tmp_path: Path) -> None:
    values = np.linspace(10895, 44361, 64 * 32).reshape(64, 32).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # PIL reads it as a 16-bit (or 32-bit integer) image
    gray = np.asarray(read_gray(path))
    expected = np.rint((values.astype(np.float64) - 10895) * 255 / (44361 - 10895)).astype(np.uint8)
    assert gray.dtype == np.uint8 and np.array_equal(gray, expected)
    assert (gray.min(), gray.max()) == (0, 255) and len(np.unique(gray)) == 256
    _, tensor = load_image(path, "L")  # predict.py's decoding: the same pixels / 255
    assert torch.equal(tensor, torch.from_numpy(expected)[None].float() / 255)


def test_a_float_tiff_is_scaled_and_a_constant_or_nan_one_handled(tmp_path: Path) -> None:
    values = np.array([[-1.5, 0.0], [0.5, 2.5]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    assert np.asarray(read_gray(tmp_path / "float.tif")).tolist() == [[0, 96], [128, 255]]
    Image.fromarray(np.full((4, 4), 30000, dtype=np.uint16)).save(tmp_path / "flat.png")
    assert not np.asarray(read_gray(tmp_path / "flat.png")).any()
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32), mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(DatasetError, match="nan.tif"):
        read_gray(tmp_path / "nan.tif")


def test_8_bit_images_are_unchanged(tmp_path: Path) -> None:
    values = np.arange(64, dtype=np.uint8).reshape(8, 8) + 100
    Image.fromarray(values, mode="L").save(tmp_path / "gray.png")
    assert np.array_equal(np.asarray(read_gray(tmp_path / "gray.png")), values)  # not stretched


# -- one image-suffix list, one listing helper --------------------------------------------------------------------
def test_one_image_suffix_list_and_one_listing_helper(tmp_path: Path) -> None:
    sources = [p for folder in ("datamodules", "workflow", "lightning_modules", "callbacks", "benchmarks")
               for p in (PROJECT_ROOT / folder).rglob("*.py")] + [PROJECT_ROOT / "predict.py"]
    definitions = [p.name for p in sources if re.search(r"^_?IMAGE_SUFFIXES\s*[:=]", p.read_text(), re.MULTILINE)]
    assert definitions == ["image_files.py"]
    for name in ("b.PNG", "a.tiff", "c.txt", "d.Jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.bmp").write_bytes(b"")
    assert [p.name for p in image_files(tmp_path)] == ["a.tiff", "b.PNG", "d.Jpeg"]
    assert [p.name for p in image_files(tmp_path, recursive=True)] == ["a.tiff", "b.PNG", "d.Jpeg", "e.bmp"]
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} == set(IMAGE_SUFFIXES)
