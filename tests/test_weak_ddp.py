"""The weak method under DDP: sharded balanced batches, metrics gathered over ranks, and ``train.py trainer=ddp_sim``
(2 CPU processes, ddp_spawn) end to end: every test image counted once, metrics equal to predictions.csv's."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import BatchSampler
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from datamodules.sampling import BalancedBatchSampler, ShardedBatchSampler, UniformOverLabelsSampler, distinct_steps
from datamodules.synthetic import write_kolektor_like
from metrics.detection import DetectionMetrics, detection_summary
from metrics.pixel import PixelMetrics
from tests.conftest import PROJECT_ROOT
from tests.helpers import run_ddp_sim
from workflow.gathering import load_fold_result


def epochs(sampler, n: int = 3) -> list[list[int]]:
    out = []
    for epoch in range(n):
        sampler.set_epoch(epoch)
        out += [list(b) for b in sampler]
    return out


def test_one_process_keeps_the_single_process_order() -> None:
    base = BalancedBatchSampler(list(range(5)), list(range(5, 30)), pairs=2, seed=3)
    sharded = ShardedBatchSampler(BalancedBatchSampler(list(range(5)), list(range(5, 30)), pairs=2, seed=3), 1, 0)
    assert len(sharded) == len(base)
    assert epochs(sharded) == epochs(base)


@pytest.mark.parametrize(("n_defective", "n_clean", "pairs", "world"), [(5, 36, 1, 2), (7, 41, 2, 2), (4, 30, 1, 3)])
def test_ranks_train_on_different_balanced_pairs(n_defective: int, n_clean: int, pairs: int, world: int) -> None:
    defective, clean = list(range(n_defective)), list(range(100, 100 + n_clean))

    def rank(r: int) -> ShardedBatchSampler:
        return ShardedBatchSampler(BalancedBatchSampler(defective, clean, pairs, seed=1), world, r, distinct_period=2)

    base = BalancedBatchSampler(defective, clean, pairs, seed=1)
    for epoch in range(4):  # several reshuffles of the (odd-sized) defective cycle
        per_rank = []
        for r in range(world):
            sampler = rank(r)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            assert len(per_rank[-1]) == len(sampler) == len(base) // world  # same number of steps on every rank
        for step in zip(*per_rank, strict=True):
            union = [i for batch in step for i in batch]
            assert len(union) == len(set(union)), step  # no image twice in a global step
            for batch in step:  # balanced: defective, clean, defective, clean, ...
                assert all(i < 100 for i in batch[0::2]) and all(i >= 100 for i in batch[1::2])
                assert len(batch) == len(step[0])
        # together the ranks train on the single-process batches of the epoch (up to swaps of repeats)
        base.set_epoch(epoch)
        expected = [i for b in list(base)[: len(base) // world * world] for i in b]
        assert Counter(i for batches in per_rank for b in batches for i in b) == Counter(expected)


def test_repeats_in_the_last_step_are_swapped_with_an_earlier_one() -> None:
    steps = distinct_steps([[[0, 10], [1, 11]], [[2, 12], [2, 13]]], period=2)
    assert steps[1][1][0] != 2 and sorted(i for s in steps for b in s for i in b) == [0, 1, 2, 2, 10, 11, 12, 13]
    assert all(len({i for b in s for i in b}) == 4 for s in steps)


def test_views_batches_are_split_over_the_ranks() -> None:
    labels = torch.arange(40) % 4

    def batches(world: int, r: int) -> list[list[int]]:
        base = BatchSampler(UniformOverLabelsSampler(labels, seed=2), 4, drop_last=True)
        return list(ShardedBatchSampler(base, world, r))

    single = batches(1, 0)
    assert batches(2, 0) == single[0::2] and batches(2, 1) == single[1::2]
    sharded = ShardedBatchSampler(BatchSampler(UniformOverLabelsSampler(labels, seed=2), 4, drop_last=True), 2, 0)
    sharded.sampler.set_epoch(1)  # where Lightning calls set_epoch: the new epoch reaches the index sampler
    assert sharded.batch_sampler.sampler.epoch == 1 and list(sharded) != batches(2, 0)


def test_metrics_count_a_padding_repeat_once() -> None:
    """What a DistributedSampler's padding does: an image seen twice (same id) counts once."""
    torch.manual_seed(0)
    heat, masks = torch.rand(5, 1, 8, 6), (torch.rand(5, 1, 8, 6) > 0.7).long()
    heat.view(-1)[::5] = torch.linspace(0, 1, 50).repeat(5)[:48]  # ties with the thresholds: >= as torchmetrics
    once = PixelMetrics(50)
    once.update(heat, masks, torch.arange(5))
    auroc, ap = BinaryAUROC(thresholds=50), BinaryAveragePrecision(thresholds=50)
    auroc.update(heat.flatten(), masks.flatten())
    ap.update(heat.flatten(), masks.flatten())
    assert once.compute() == pytest.approx({"pixel_auroc": float(auroc.compute()), "pixel_ap": float(ap.compute()),
                                            "pixel_images": 5})
    twice = PixelMetrics(50)
    twice.update(heat[:3], masks[:3], torch.arange(3))
    twice.update(heat[2:], masks[2:], torch.arange(2, 5))  # image 2 again
    assert twice.compute() == once.compute()
    scores, labels = torch.rand(5), torch.tensor([1.0, 0, 0, 1, 0])
    metric = DetectionMetrics()
    metric.update(scores[[0, 1, 2]], labels[[0, 1, 2]], torch.tensor([0, 1, 2]))
    metric.update(scores[[3, 4, 0]], labels[[3, 4, 0]], torch.tensor([3, 4, 0]))
    assert metric.compute() == detection_summary(scores, labels)


@pytest.mark.parametrize(("name", "strategy", "sync_bn"), [("ddp", "ddp_find_unused_parameters_true", True),
                                                          ("ddp_spawn", "ddp_spawn_find_unused_parameters_true", True),
                                                          ("ddp_sim", "ddp_spawn_find_unused_parameters_true", False)])
def test_ddp_trainer_configs(name: str, strategy: str, sync_bn: bool) -> None:
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", f"trainer={name}"])
    assert cfg.trainer.strategy == strategy and cfg.trainer.sync_batchnorm is sync_bn
    assert cfg.trainer.use_distributed_sampler is False  # the datamodule shards its loaders itself
    assert (cfg.trainer.accelerator, cfg.trainer.devices) == (("cpu", 2) if name == "ddp_sim" else ("gpu", "auto"))


def read_predictions(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_train_py_with_two_processes_counts_every_test_image_once(tmp_path: Path) -> None:
    # 9 commutators x 7 parts: fold 0 tests 21 images (odd: the DistributedSampler repeats one), trains on
    # 5 defective (odd: a repeat at the defective cycle's reshuffle) + 36 defect-free images (41: padded too)
    root = write_kolektor_like(tmp_path / "KolektorSDD", num_folders=9, parts_per_folder=7, size=(64, 32), seed=4)
    run_dir, probe = tmp_path / "run", tmp_path / "probe.json"
    overrides = ["experiment=demo", "debug=fast", f"data.root={root}", "data.num_defective=5", "logger=none"]
    run_ddp_sim(overrides, run_dir, probe)

    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data, fold=0)
    train, test = datamodule.split(datamodule.list_samples())
    assert len(test) == 21 and len(train) == 41

    fold = json.loads((run_dir / "metrics.json").read_text())["folds"][0]
    rows = read_predictions(run_dir / "fold0" / "predictions.csv")
    assert fold["n_images"] == len(test) == len(rows)
    assert sorted(r["name"] for r in rows) == sorted(s.name for s in test)  # each test image exactly once
    scores = torch.tensor([float(r["score"]) for r in rows])
    labels = torch.tensor([float(r["label"]) for r in rows])
    recomputed = detection_summary(scores, labels, fold["fixed_threshold"])
    for key in ("n_defective", "ap", "false_calls", "fp_at_full_recall", "false_calls_fixed"):
        assert fold[key] == pytest.approx(recomputed[key], abs=1e-9), key
    assert set(load_fold_result(run_dir / "fold0")["per_image"]["ids"].tolist()) == set(range(21))

    report = json.loads(probe.read_text())
    assert report["world_size"] == 2 and report["same_weights"]
    steps = list(zip(*report["batches"], strict=True))
    assert len(steps) == cfg.model.stages[0].iterations + cfg.model.stages[1].iterations + \
        cfg.model.stages[2].iterations  # the plan's iterations, each with one pair per rank
    for step, step_labels in zip(steps, zip(*report["labels"], strict=True), strict=True):
        union = [i for batch in step for i in batch]
        assert len(union) == len(set(union)) == 4
        assert all(lab == [1.0, 0.0] for lab in step_labels)
