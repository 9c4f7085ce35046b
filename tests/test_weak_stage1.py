"""Stage 1 of the weak method: the dark state of Eq. 5, alpha's warm-up, and stage 1's Q in the fold's result."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lightning_modules.weak import q_watch
from lightning_modules.weak.dark_restart import DarkRestart
from lightning_modules.weak.losses import collaborative_alpha, warmed_up_alpha, weak_loss
from lightning_modules.weak.q_watch import QWatch
from lightning_modules.weak.stages import StagePlan
from tests.test_kolektor_datamodule import make_dm
from tests.test_stages import forced_heatmap_module, tiny_module, tiny_trainer
from workflow.gathering import FoldResultWriter, load_fold_result
from workflow.run_warnings import module_warnings


def common_q_gradient(q: float, alpha: float) -> float:
    """d(Eq. 5)/dQ for one defective and one defect-free image that share the same Q (an LNet that does not yet
    tell them apart)."""
    heat = torch.full((2, 1, 4, 4), q, dtype=torch.float64, requires_grad=True)
    weak_loss(heat, torch.tensor([1.0, 0.0]), alpha, eps=0.0).backward()
    return float(heat.grad.sum()) * 16  # per unit of Q (each pixel weighs 1/16 in Q)


@pytest.mark.parametrize("alpha", [1.0, 4.0, 8.0])
def test_an_undiscriminating_heat_map_settles_where_minus_log_q_is_alpha(alpha: float) -> None:
    """The reason for the warm-up: with the same Q on both images, Eq. 5's gradient changes sign where
    log((1-Q)/Q) = alpha / (1-Q), about Q = exp(-alpha): 3.4e-4 at the paper's alpha 8, where the sigmoid's slope
    is ~1/750 of its value at Q = 0.5; 0.22 at alpha 1."""
    low, high = 1e-7, 0.5
    assert common_q_gradient(low, alpha) < 0 < common_q_gradient(high, alpha)  # up from below, down from above
    for _ in range(60):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if common_q_gradient(mid, alpha) < 0 else (low, mid)
    by_hand = [q for q in np.geomspace(1e-6, 0.5, 200_000) if math.log((1 - q) / q) <= alpha / (1 - q)][0]
    assert low == pytest.approx(by_hand, rel=1e-3)
    assert low == pytest.approx({1.0: 0.2178, 4.0: 0.01682, 8.0: 3.345e-4}[alpha], rel=1e-3)


def test_warmed_up_alpha_ramps_from_its_start_to_eq6() -> None:
    assert warmed_up_alpha(8.0, 0, 100) == 1.0
    assert warmed_up_alpha(8.0, 50, 100) == pytest.approx(4.5)
    assert warmed_up_alpha(8.0, 100, 100) == 8.0 and warmed_up_alpha(8.0, 10, 0) == 8.0
    assert warmed_up_alpha(6.0, 25, 100, start=2.0) == pytest.approx(3.0)


def test_the_module_warms_alpha_up_over_a_fraction_of_the_collaborative_stage_only() -> None:
    stages = [{"name": "localization", "iterations": 100, "lr": 0.1, "train": ["trunk", "lnet"],
               "losses": ["weak"], "alpha": "collaborative"},
              {"name": "joint", "iterations": 10, "lr": 0.001, "train": ["trunk", "lnet", "dnet"],
               "losses": ["bce", "weak"]}]
    paper, warmed = tiny_module(stages=stages), tiny_module(stages=stages, alpha_warmup=0.2)
    eq6 = [collaborative_alpha(s, 100, 8.0, 2) for s in range(100)]
    assert [paper.alpha_at(0, s) for s in range(100)] == pytest.approx(eq6)
    assert warmed.alpha_at(0, 0) == 1.0 and warmed.alpha_at(0, 10) == pytest.approx(1 + (eq6[10] - 1) * 0.5)
    assert [warmed.alpha_at(0, s) for s in range(20, 100)] == pytest.approx(eq6[20:])
    assert warmed.alpha_at(1, 0) == 8.0  # stage 3: alpha_init, no warm-up


@pytest.mark.parametrize("bias", [-30.0, 0.0])
def test_stage1_q_goes_into_the_fold_result_and_a_dark_stage_into_its_warnings(kolektor_root: Path, tmp_path: Path,
                                                                              bias: float) -> None:
    """lr 0 keeps a heat map forced to sigmoid(bias): stage 1's Q over its last tenth lands in the fold's metrics;
    a dark one is also a warning kept on the module and saved with the fold's result (for metrics.json)."""
    model = forced_heatmap_module(bias, stage1_iterations=10)
    trainer = tiny_trainer(tmp_path, [FoldResultWriter()], max_steps=11)
    datamodule = make_dm(kolektor_root, image_size=(64, 24))
    with pytest.warns(UserWarning, match="dark") if bias < 0 else nullcontext():
        trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)
    q = 1 / (1 + math.exp(-bias))
    metrics = model.fold_result["metrics"]
    assert (metrics["stage1_q_defective"], metrics["stage1_q_clean"]) == pytest.approx((q, q), abs=1e-6)
    assert model.fold_result["per_image"]["score_pooled"].dtype == torch.float64  # no float32 ties when pooling
    saved = load_fold_result(tmp_path)
    assert saved["metrics"]["stage1_q_defective"] == pytest.approx(q, abs=1e-6)
    stage1 = [w for w in saved["warnings"] if "'localization'" in w]
    if bias < 0:
        assert len(stage1) == 1 and "dark" in stage1[0] and "Q 0.0000" in stage1[0]
    else:
        assert stage1 == []
    # lr 0 learns nothing: the scores do not rank the training images, which is said too (underfit_warning)
    assert any("its own training images at AP" in w for w in saved["warnings"])



class NetStates(L.Callback):
    """The network's state (weights and batch-norm statistics) before the given global steps."""

    def __init__(self, steps: set[int]) -> None:
        self.steps, self.states, self.lrs = steps, {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step in self.steps:
            self.states[trainer.global_step] = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
            self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def test_qwatch_counts_the_batches_that_rank_and_calls_chance_unranked() -> None:
    """Over the last tenth (here 20 of 200 steps), the batches where the defective image's Q is the higher; a
    one-sided binomial test against 1/2 at 0.05: 15 of 20 is above chance (p 0.021), 14 of 20 is not (p 0.058)."""
    watch = QWatch()
    labels = torch.tensor([1.0, 0.0])
    for step in range(200):
        higher = step >= 185  # the last tenth (steps 180-199): 5 where the defect-free Q is higher, then 15 ranked
        logs = watch.update(torch.tensor([0.6, 0.4] if higher or step < 180 else [0.3, 0.5]), labels, step, 200)
    assert float(logs["q_defective"]) == pytest.approx(0.6)
    summary = watch.summary()
    assert (summary["ranked"], summary["pairs"], summary["steps"]) == (15, 20, 20)
    assert not QWatch.is_unranked(summary)
    assert QWatch.is_unranked(dict(summary, ranked=14))
    assert not QWatch.is_unranked(dict(summary, ranked=0, pairs=19))  # too few batches to tell
    watch.update(torch.tensor([0.2, 0.9]), torch.tensor([1.0, 1.0]), 0, 200)  # no defect-free image: no pair
    assert watch.summary()["pairs"] == 0


@pytest.mark.parametrize("rerun", [True, False])
def test_a_lit_stage_1_that_does_not_rank_is_rerun_where_asked(kolektor_root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, rerun: bool) -> None:
    """A heat map held at 0.5 everywhere (lr 0) is lit but ranks nothing (equal Q on both images): with
    rerun_unranked stage 1 is run again like a dark one (and, still at 0.5, then said to have failed); without, a
    warning says at once that it did not tell the images apart. Stage 3's weak loss is not tested so."""
    monkeypatch.setattr(q_watch, "MIN_RANKED_BATCHES", 1)
    forced = forced_heatmap_module(0.0, stage1_iterations=4)
    joint = {"name": "joint", "iterations": 1, "lr": 0.0, "train": ["trunk", "lnet", "dnet"], "losses": ["bce", "weak"]}
    model = tiny_module(stages=[*forced.hparams.stages, joint], dark_restarts=1, rerun_unranked=rerun)
    model.net.load_state_dict(forced.net.state_dict())
    trainer = tiny_trainer(tmp_path, [FoldResultWriter()], max_steps=model.max_steps)
    with pytest.warns(UserWarning, match="without telling the defective training images"):
        trainer.fit(model, datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    assert trainer.global_step == (10 if rerun else 6)
    warnings_ = module_warnings(model)  # none for stage 3 (joint), which ranks nothing either: stage 1's test only
    assert ["run again" in w for w in warnings_] == ([True, False] if rerun else [False])
    assert ("'localization_retry'" in warnings_[-1]) if rerun else ("learn little" in warnings_[0])
    metrics = model.extra_fold_metrics()
    assert metrics["stage1_restarts"] == float(rerun) and metrics["stage1_ranked_share"] == 0.0
    assert metrics["stage1_q_defective"] == pytest.approx(0.5)


def restart_module(bias: float, restarts: int) -> torch.nn.Module:
    """forced_heatmap_module's dark (or lit) heat map, its stage 1 at lr 0.5 (4 steps) so that a rerun's rate shows."""
    model = forced_heatmap_module(bias, stage1_iterations=4)
    stages = [dict(model.hparams.stages[0], lr=0.5, lr_drops={2: 0.2}), model.hparams.stages[1]]
    rebuilt = tiny_module(stages=stages, dark_restarts=restarts)
    rebuilt.net.load_state_dict(model.net.state_dict())
    return rebuilt


def test_a_dark_stage_1_is_run_again_from_its_starting_weights_at_a_tenth_of_its_rates(kolektor_root: Path,
                                                                                      tmp_path: Path) -> None:
    model = restart_module(-30.0, restarts=1)
    states = NetStates({0, 4, 8})
    trainer = tiny_trainer(tmp_path, [FoldResultWriter(), states], max_steps=model.max_steps)
    with pytest.warns(UserWarning, match="dark"):
        trainer.fit(model, datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    # the rerun is inserted after stage 1 and the trainer's budget grew by its length
    assert [s.name for s in model.plan.active] == ["localization", "localization_retry", "decision"]
    assert trainer.global_step == 4 + 4 + 1
    assert [model.plan.lr_at(s) for s in (0, 2, 4, 6, 8)] == pytest.approx([0.5, 0.2, 0.05, 0.02, 0.0])
    # it starts from the weights and batch-norm statistics stage 1 started from (they had moved by step 4's end)
    start, rerun = states.states[0], states.states[4]
    assert all(torch.equal(start[k], rerun[k]) for k in start)
    assert any(not torch.equal(start[k], states.states[8][k]) for k in start if "running_mean" in k)
    assert (states.lrs[0], states.lrs[4]) == pytest.approx((0.5, 0.05))
    trainer.test(model, datamodule=make_dm(kolektor_root, image_size=(64, 24)), verbose=False)
    warnings_ = [w for w in load_fold_result(tmp_path)["warnings"] if "localization" in w]  # stage 1's
    assert len(warnings_) == 2 and "run again" in warnings_[0] and "'localization_retry'" in warnings_[1]
    assert model.fold_result["metrics"]["stage1_restarts"] == 1.0


def test_a_lit_stage_1_or_restarts_0_leave_the_plan_alone(kolektor_root: Path, tmp_path: Path) -> None:
    for bias, restarts in ((0.0, 1), (-30.0, 0)):
        model = restart_module(bias, restarts)
        trainer = tiny_trainer(tmp_path / f"{bias}_{restarts}", [], max_steps=model.max_steps)
        with pytest.warns(UserWarning, match="dark") if bias < 0 else nullcontext():
            trainer.fit(model, datamodule=make_dm(kolektor_root, image_size=(64, 24)))
        assert trainer.global_step == 5 and len(model.plan.active) == 2
        assert model.extra_fold_metrics()["stage1_restarts"] == 0.0


def test_resuming_from_the_checkpoint_of_a_dark_stage_1_still_reruns_it(kolektor_root: Path, tmp_path: Path) -> None:
    """StageCheckpoint saves stage 1's end before the module's rerun: a fit resumed from that file reruns stage 1
    from its starting weights (kept in the checkpoint) at the rerun's rate; a lit stage 1's checkpoints drop them."""
    from callbacks import StageCheckpoint

    model = restart_module(-30.0, restarts=1)
    start = {k: v.clone() for k, v in model.net.state_dict().items()}
    first = tiny_trainer(tmp_path / "a", [StageCheckpoint()], max_steps=model.max_steps)
    with pytest.warns(UserWarning, match="dark"):
        first.fit(model, datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    saved = torch.load(tmp_path / "a" / "checkpoints" / "stage1-localization.ckpt", weights_only=True)
    assert saved["dark_restart"]["pending"] and saved["dark_restart"]["done"] == 0
    states = NetStates({4})
    resumed = restart_module(-30.0, restarts=1)
    second = tiny_trainer(tmp_path / "b", [states], max_steps=resumed.max_steps)
    with pytest.warns(UserWarning, match="dark"):
        second.fit(resumed, datamodule=make_dm(kolektor_root, image_size=(64, 24)),
                   ckpt_path=str(tmp_path / "a" / "checkpoints" / "stage1-localization.ckpt"))
    assert second.global_step == 9 and resumed.extra_fold_metrics()["stage1_restarts"] == 1.0
    assert all(torch.equal(start[k], states.states[4][k]) for k in start)
    assert states.lrs[4] == pytest.approx(0.05)  # the rerun's rate from its first step (not the decision stage's)
    lit = restart_module(0.0, restarts=1)
    third = tiny_trainer(tmp_path / "c", [StageCheckpoint()], max_steps=lit.max_steps)
    third.fit(lit, datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    assert torch.load(tmp_path / "c" / "checkpoints" / "stage2-decision.ckpt",
                      weights_only=True)["dark_restart"]["start_state"] is None


def test_a_checkpoint_after_a_rerun_rebuilds_the_plan_with_it() -> None:
    model = restart_module(-30.0, restarts=2)
    model.on_load_checkpoint({"dark_restart": {"done": 2, "start_state": None, "pending": False}})
    assert [s.name for s in model.plan.active] == ["localization", "localization_retry", "localization_retry_retry",
                                                   "decision"]
    assert model.max_steps == 4 * 3 + 1 and model._stage1_index == 2
    assert model.plan.lr_at(8) == pytest.approx(0.5 * 0.01)


def test_with_retry_copies_a_stage_after_itself_at_scaled_rates() -> None:
    plan = StagePlan([{"name": "a", "iterations": 3, "lr": 0.1, "lr_drops": {2: 0.01}, "train": ["trunk"],
                       "losses": ["weak"]},
                      {"name": "b", "iterations": 2, "lr": 0.3, "train": ["dnet"], "losses": ["bce"]}])
    retried = plan.with_retry(0, 0.5)
    assert [s.name for s in retried.active] == ["a", "a_retry", "b"] and retried.total == 8
    assert [retried.lr_at(s) for s in range(8)] == pytest.approx([0.1, 0.1, 0.01, 0.05, 0.05, 0.005, 0.3, 0.3])
    assert plan.total == 5  # the original plan is unchanged
    with pytest.raises(ValueError, match="dark_restart_lr_factor"):
        DarkRestart(1, 0.0)
