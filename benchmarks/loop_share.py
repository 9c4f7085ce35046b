"""Where a real training step's time goes: the data loader, the step's computation, Lightning's loop around it.

    python benchmarks/loop_share.py [--steps 30] [--workers 0 1 2] [--archive ../shared/datasets/KolektorSDD.zip]

Runs the first ``--steps`` steps of ``experiment=weak_kolektor_cpu`` (stage 1, fold 0, KolektorSDD read from the
zip) through ``L.Trainer.fit`` with Lightning's ``SimpleProfiler``, once per ``data.num_workers`` value, and reports
per step (medians and means after 3 warm-up steps):

* ``step_wall_s``: from one step's start to the next's (everything the loop does);
* ``dataloader_s``: waiting for the next batch (``train_dataloader_next``); ``dataloader_share`` its part of the wall;
* ``compute_s``: the optimizer step with its closure (``training_step``, ``backward``, SGD): what a plain PyTorch
  loop over the same batches would run;
* ``loop_overhead``: ``(step_wall_s - dataloader_s) / compute_s - 1``, the part Lightning's loop, hooks and logging
  add to that computation.

``benchmarks/cpu_speed.py`` calls :func:`loop_shares` when the zip is there and records the result under
``metrics.loop``; without it the benchmark says so and skips this part.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.profilers import SimpleProfiler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_precision import preset  # noqa: E402
from lightning_modules.method import build_method  # noqa: E402

DEFAULT_ARCHIVE = ROOT.parent / "shared" / "datasets" / "KolektorSDD.zip"
WARM_UP = 3


class StepClock(L.Callback):
    """The wall-clock time from one training step's start to the next's."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: object) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args: object) -> None:
        self.starts.append(time.perf_counter())

    def intervals(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.starts)][WARM_UP:]


def profiled_mean(profiler: SimpleProfiler, suffix: str) -> float:
    """Mean of the profiler's durations for the action ending in ``suffix``, after the warm-up steps."""
    names = [name for name in profiler.recorded_durations if name.endswith(suffix)]
    if len(names) != 1:
        raise KeyError(f"profiler action *{suffix}: found {names}")
    return statistics.fmean(profiler.recorded_durations[names[0]][WARM_UP:])


def one_setting(archive: Path, root: Path, steps: int, workers: int) -> dict:
    cfg = preset("weak_kolektor_cpu", f"data.archive={archive}", f"data.root={root}", f"data.num_workers={workers}")
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, fold=0)
    model = build_method(cfg.model, cfg.optimizer)
    clock, profiler = StepClock(), SimpleProfiler()
    with tempfile.TemporaryDirectory() as work:
        trainer = instantiate(cfg.trainer, max_steps=steps, profiler=profiler, logger=False, callbacks=[clock],
                              enable_checkpointing=False, default_root_dir=work)
        trainer.fit(model, datamodule=datamodule)
    wall = statistics.median(clock.intervals())
    loader = profiled_mean(profiler, "train_dataloader_next")
    compute = profiled_mean(profiler, f"{type(model).__name__}.optimizer_step")
    return {"step_wall_s": wall, "dataloader_s": loader, "compute_s": compute, "dataloader_share": loader / wall,
            "loop_overhead": (wall - loader) / compute - 1, "precision": str(cfg.trainer.precision)}


def loop_shares(archive: Path, steps: int = 30, workers: Sequence[int] = (0, 1, 2)) -> dict:
    """:func:`one_setting` per worker count; the dataset extracted once into a scratch folder."""
    with tempfile.TemporaryDirectory() as data:
        root = Path(data) / "KolektorSDD"
        per_workers = {str(w): one_setting(archive, root, steps, w) for w in workers}
    return {"steps": steps, "stage": "localization (stage 1), fold 0", "by_workers": per_workers}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    args = parser.parse_args()
    print(loop_shares(args.archive, args.steps, args.workers))


if __name__ == "__main__":
    main()
