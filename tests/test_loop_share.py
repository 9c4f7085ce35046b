"""benchmarks/loop_share.py: the preset's own Lightning loop on a KolektorSDD-layout zip, timed by part."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lightning.pytorch.profilers import SimpleProfiler

from benchmarks.loop_share import StepClock, loop_shares, profiled_mean
from datamodules.synthetic import write_kolektor_like


def test_profiled_mean_skips_the_warm_up_and_wants_one_action() -> None:
    profiler = SimpleProfiler()
    profiler.recorded_durations["[_TrainingEpochLoop].train_dataloader_next"] = [9.0, 9.0, 9.0, 1.0, 3.0]
    assert profiled_mean(profiler, "train_dataloader_next") == 2.0
    with pytest.raises(KeyError, match="found"):
        profiled_mean(profiler, "optimizer_step")


def test_step_clock_measures_from_start_to_start_after_the_warm_up() -> None:
    clock = StepClock()
    clock.starts = [0.0, 5.0, 6.0, 7.0, 8.5, 10.5]
    assert clock.intervals() == [1.5, 2.0]


@pytest.mark.slow
def test_loop_shares_on_a_generated_zip(tmp_path: Path) -> None:
    """The preset reads the official 3-fold split: the generated dataset has its 50 commutators."""
    write_kolektor_like(tmp_path / "data" / "KolektorSDD", num_folders=50, parts_per_folder=3, size=(96, 40), seed=3)
    archive = Path(shutil.make_archive(str(tmp_path / "KolektorSDD"), "zip", tmp_path / "data", "KolektorSDD"))
    result = loop_shares(archive, steps=6, workers=(0,))
    shares = result["by_workers"]["0"]
    assert shares["step_wall_s"] > shares["dataloader_s"] > 0
    assert 0 < shares["dataloader_share"] < 1
    assert shares["compute_s"] > 0 and shares["loop_overhead"] > -0.5
