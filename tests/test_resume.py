"""A run killed (SIGKILL) mid-training and resumed with ``ckpt_path=`` ends exactly where an uninterrupted run
ends: the same weights (bit for bit), metrics and predictions, on CPU, for the weak method (tiny
``experiment=demo``) and the clustering method (tiny ``experiment=cluster_neu_cpu``, marked slow). Below them:
the training loader resumes its epoch order and random state, and ``last.ckpt`` holds the final step."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import Dataset

from callbacks.checkpoint import LastCheckpoint
from datamodules.resumable import ResumableDataLoader
from datamodules.sampling import BalancedBatchSampler, ShardedBatchSampler, UniformOverLabelsSampler
from datamodules.synthetic import write_neu_cls
from tests.conftest import PROJECT_ROOT
from tests.test_kolektor_datamodule import make_dm
from tests.test_stages import tiny_module, tiny_trainer
from workflow.pool_runs import pool_runs
from workflow.progress import RESUMED_FILE

#: the weak demo shrunk to 50 steps (epochs of 28 batches: 28 defect-free training images), a checkpoint every
#: 5 steps. The killed run stops at the start of step 38, 3 steps past its last checkpoint (step 35: stage 2 of
#: 3, its frozen-output cache half built, 7 batches into the second epoch).
TINY_DEMO = [
    "experiment=demo", "folds=[0]", "data.image_size=[64,32]", "data.num_generated_folders=6",
    "model.net.lnet_wide=16", "model.stages.0.iterations=20", "model.stages.1.iterations=20",
    "model.stages.2.iterations=10", "model.heatmap_dir=null", "callbacks.model_checkpoint.every_n_train_steps=5",
    "print_config=false", "trainer.enable_model_summary=false",
]
#: the clustering method on 24 generated NEU training images: 8 steps of 8 images (epochs of 3 batches), random
#: views, pseudo-labels reassigned (head re-initialised) after steps 0, 2, 4 and 6, a checkpoint every 2 steps;
#: killed at the start of step 5, resumed from step 4: mid-epoch, right after a reassignment in that epoch.
TINY_CLUSTER = [
    "experiment=cluster_neu_cpu", "folds=[0]", "data.archive=null", "data.image_size=[32,32]",
    "model.training_plan.views.global_size=32", "model.training_plan.views.local_size=32",
    "model.training_plan.views.n_local=2", "model.training_plan.batch_size=8",
    "model.max_steps=8", "model.warmup_steps=1", "callbacks.pseudo_labels.every_n_steps=2",
    "callbacks.pseudo_labels.freeze_after=1.0", "callbacks.pseudo_labels.pca_dim=8",
    "callbacks.pseudo_labels.progress=false", "callbacks.model_checkpoint.every_n_train_steps=2", "print_config=false",
    "trainer.enable_model_summary=false",
]


class PauseAtStep(L.Callback):
    """Test-only: at the start of global step ``step``, write ``marker`` and wait to be killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(trainer.global_step))
            time.sleep(600)


def train_command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"]


def train_env() -> dict[str, str]:
    """One thread per process: faster on a shared CPU, and the same arithmetic in every run."""
    return {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train(run_dir: Path, *overrides: str) -> Path:
    """Run ``train.py`` with ``overrides`` into ``run_dir``; fail the test if it fails."""
    out = subprocess.run(train_command(run_dir, *overrides), cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env=train_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


_DEMO_RUNS: dict[tuple[str, ...], Path] = {}


def demo_run(tmp_path_factory: pytest.TempPathFactory, *overrides: str) -> Path:
    """The tiny demo (:data:`TINY_DEMO`) with ``overrides``, run once per test session (tests share it)."""
    if overrides not in _DEMO_RUNS:
        data_dir = tmp_path_factory.getbasetemp() / "demo_data"
        _DEMO_RUNS[overrides] = train(tmp_path_factory.mktemp("demo_run"), *TINY_DEMO, f"paths.data_dir={data_dir}",
                                      *overrides)
    return _DEMO_RUNS[overrides]


#: metrics that time the run rather than measure its results
TIMINGS = {"ms_per_image"}


def metrics_of(run_dir: Path) -> dict:
    """Per-fold and pooled metrics of a run (timings, wall time, commit and other run facts left out)."""
    report = json.loads((run_dir / "metrics.json").read_text())

    def results(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k not in TIMINGS}

    return {"folds": [results(f) for f in report["folds"]], "pooled": results(report["pooled"])}


def checkpoint(run_dir: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run_dir / "fold0" / "checkpoints" / name, map_location="cpu", weights_only=True)


def kill_mid_training(run_dir: Path, pause_step: int, *overrides: str) -> None:
    """Start a run, SIGKILL it once it has paused at the start of step ``pause_step``."""
    marker, log = run_dir.parent / f"{run_dir.name}.paused", run_dir.parent / f"{run_dir.name}.stderr"
    pause = [f"+callbacks.pause._target_={__name__}.PauseAtStep", f"+callbacks.pause.step={pause_step}",
             f"+callbacks.pause.marker={marker}"]
    with open(log, "w") as stderr:  # a file, not a pipe: a full pipe would stall the run before the pause
        proc = subprocess.Popen(train_command(run_dir, *overrides, *pause), cwd=PROJECT_ROOT, env=train_env(),
                                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 600
            while not marker.exists():
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (rc {proc.returncode}) before step {pause_step}: "
                                f"{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the run did not reach step {pause_step}")
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def kill_and_resume(tmp_path: Path, overrides: list[str], pause_step: int, ckpt_step: int,
                    epoch_length: int) -> Path:
    """Kill a run at ``pause_step``; check its ``last.ckpt`` is from ``ckpt_step``, mid-epoch; resume from it."""
    killed = tmp_path / "killed"
    kill_mid_training(killed, pause_step, *overrides)
    assert not (killed / "metrics.json").exists()
    state = checkpoint(killed)
    assert state["global_step"] == ckpt_step
    loader = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert (loader["epoch"], loader["batches"]) == divmod(ckpt_step, epoch_length)
    assert 0 < loader["batches"] < epoch_length  # mid-epoch: the case Lightning alone replays from the start
    return train(tmp_path / "resumed", *overrides, f"ckpt_path={killed / 'fold0' / 'checkpoints' / 'last.ckpt'}")


def assert_same_results(run: Path, reference: Path, final_step: int) -> None:
    """The same final weights (bit for bit), metrics and predictions."""
    final, expected = checkpoint(run), checkpoint(reference)
    assert final["global_step"] == expected["global_step"] == final_step
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    different = [k for k, v in expected["state_dict"].items() if not torch.equal(final["state_dict"][k], v)]
    assert not different, f"weights differ: {different[:5]}"
    assert metrics_of(run) == metrics_of(reference)
    predictions = (run / "fold0" / "predictions.csv").read_text()
    assert predictions == (reference / "fold0" / "predictions.csv").read_text()
    assert len(predictions.splitlines()) == 1 + metrics_of(reference)["pooled"]["n_images"]


class RandomItems(Dataset):
    """Items that draw from the global generator, as random views do; counts the items read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        self.reads += 1
        return {"index": index, "noise": torch.rand(())}


LOADERS = {
    "pairs": lambda data: ResumableDataLoader(data, batch_sampler=BalancedBatchSampler(range(3), range(3, 10))),
    "views": lambda data: ResumableDataLoader(data, batch_size=3, drop_last=True, sampler=UniformOverLabelsSampler(
        torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 2]), seed=4)),
    "ddp_rank1": lambda data: ResumableDataLoader(data, batch_sampler=ShardedBatchSampler(
        BalancedBatchSampler(range(3), range(3, 10), seed=2), num_replicas=2, rank=1)),
}


def plain(batches: list[dict]) -> list[tuple[list[int], list[float]]]:
    return [(b["index"].tolist(), b["noise"].tolist()) for b in batches]


@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize("stop", [2, None], ids=["mid_epoch", "epoch_end"])
def test_loader_resumes_its_epoch_order_and_random_state(kind: str, stop: int | None) -> None:
    """A new loader, loaded with the state saved ``stop`` batches into epoch 1 (or at its end), yields what the
    uninterrupted loader yields from there on, random content included, without reading the skipped items."""
    torch.manual_seed(0)
    loader = LOADERS[kind](RandomItems(10))
    epoch0 = plain(list(loader))
    epoch1 = iter(loader)
    before = plain([next(epoch1) for _ in range(stop if stop is not None else len(loader))])
    buffer = io.BytesIO()
    torch.save(loader.state_dict(), buffer)  # as in a checkpoint, loadable without unpickling code
    expected = plain(list(epoch1)) + plain(list(loader)) + [([], [torch.rand(()).item()])]
    whole_epoch1 = before + expected[: len(loader) - len(before)]
    assert [i for i, _ in epoch0] != [i for i, _ in whole_epoch1]  # a new order each epoch (set_epoch)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert (state["epoch"], state["batches"]) == (1, len(before))

    torch.manual_seed(123)  # a new process: other random state, fresh sampler
    data = RandomItems(10)
    resumed = LOADERS[kind](data)
    resumed.load_state_dict(state)
    passes = 2 if stop is not None else 1  # the rest of epoch 1 (when there is one), then epoch 2
    got = [batch for _ in range(passes) for batch in plain(list(resumed))] + [([], [torch.rand(()).item()])]
    assert got == expected
    assert data.reads == sum(len(indices) for indices, _ in expected[:-1])  # the skipped items were not read


def test_last_ckpt_holds_the_final_step_when_training_ends_between_saves(kolektor_root: Path, tmp_path: Path) -> None:
    """Lightning's own ModelCheckpoint would leave last.ckpt at step 10 of 12 here."""
    saver = LastCheckpoint(dirpath=str(tmp_path / "checkpoints"), save_last=True, every_n_train_steps=5,
                           save_top_k=0)
    trainer = tiny_trainer(tmp_path, [saver], max_steps=12)
    trainer.fit(tiny_module(), datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    final = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 12
    assert all(torch.equal(v, trainer.lightning_module.state_dict()[k]) for k, v in final["state_dict"].items())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]


def test_weak_demo_killed_mid_training_and_resumed_matches_an_uninterrupted_run(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    reference = demo_run(tmp_path_factory)
    data_dir = tmp_path_factory.getbasetemp() / "demo_data"
    resumed = kill_and_resume(tmp_path, [*TINY_DEMO, f"paths.data_dir={data_dir}"], pause_step=38, ckpt_step=35,
                              epoch_length=28)
    stages = resumed / "fold0" / "checkpoints"
    assert not (stages / "stage1-localization.ckpt").exists()  # it started at step 35, not 0
    assert (stages / "stage2-decision.ckpt").is_file()
    assert_same_results(resumed, reference, final_step=50)
    # the training time before the kill, kept in the checkpoint, counts in the resumed run's and the pooled wall time
    before = checkpoint(tmp_path / "killed")["callbacks"]["ProgressLog"]["trained_s"]
    assert before > 0 and not (reference / "fold0" / RESUMED_FILE).exists()
    assert json.loads((resumed / "fold0" / RESUMED_FILE).read_text()) == {"resumed_at_step": 35,
                                                                           "trained_before_s": before}
    assert json.loads((resumed / "metrics.json").read_text())["wall_s"] > before
    assert pool_runs([resumed], tmp_path / "pooled")["wall_s"] > before


@pytest.mark.slow  # three runs of the clustering pipeline: about 35 s of CPU
def test_clustering_killed_mid_training_and_resumed_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    root = write_neu_cls(tmp_path / "NEU-CLS", per_class=6, size=(32, 32), seed=3)
    overrides = [*TINY_CLUSTER, f"data.root={root}"]
    reference = train(tmp_path / "uninterrupted", *overrides)
    resumed = kill_and_resume(tmp_path, overrides, pause_step=5, ckpt_step=4, epoch_length=3)
    assert_same_results(resumed, reference, final_step=8)
    kmeans = checkpoint(resumed)["callbacks"]["PseudoLabelReassigner"]
    assert [h["step"] for h in kmeans["history"]] == [0, 2, 4, 6]  # 6 after the resume
