"""Three stages in one fit: frozen parts stay put, the lr drops on schedule, resume continues a stage."""

from __future__ import annotations

import math
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks import StageCheckpoint
from lightning_modules.augmentation import augment, augmentation_at
from lightning_modules.weak import StagePlan, WeakDefectNet, WeakDetectionModule
from lightning_modules.weak.module import PAPER_STAGES
from tests.test_kolektor_datamodule import make_dm

TINY_STAGES = [
    {"name": "localization", "iterations": 4, "lr": 0.1, "train": ["trunk", "lnet"], "losses": ["weak"],
     "alpha": "collaborative"},
    {"name": "decision", "iterations": 6, "lr": 0.01, "lr_drops": {3: 0.001}, "train": ["dnet"], "losses": ["bce"]},
    {"name": "joint", "iterations": 2, "lr": 0.001, "train": ["trunk", "lnet", "dnet"], "losses": ["bce", "weak"]},
]


class RecordSteps(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.stages: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.stages.append(pl_module.plan.locate(trainer.global_step)[1].name)


def tiny_module(**kwargs) -> WeakDetectionModule:
    """The network and optimizer as configs, as train.py hands them: its checkpoints rebuild it."""
    kwargs.setdefault("stages", TINY_STAGES)
    return WeakDetectionModule({"_target_": "lightning_modules.weak.WeakDefectNet", "lnet_wide": 8},
                               {"_target_": "torch.optim.SGD", "_partial_": True}, alpha_every=2,
                               heatmap_dir=None, **kwargs)


def tiny_trainer(root: Path, callbacks: list, max_steps: int = 12) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=max_steps, max_epochs=-1, logger=False, callbacks=callbacks,
                     default_root_dir=str(root), enable_progress_bar=False, enable_model_summary=False,
                     gradient_clip_val=1.0)


def params_of(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def test_paper_plan_lr_drops_at_iteration_600_of_stage_2() -> None:
    plan = StagePlan(PAPER_STAGES)
    assert plan.total == 750 + 1200 + 300
    assert [plan.lr_at(s) for s in (0, 749, 750, 750 + 599, 750 + 600, 1949, 1950, 2249)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001]
    )
    assert plan.locate(750)[1].name == "decision" and plan.locate(1950)[1].name == "joint"


def test_frozen_parts_do_not_change_in_stage_2_and_lr_follows_the_plan(kolektor_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    record = RecordSteps()
    model = tiny_module()
    trainer = tiny_trainer(tmp_path, [record, StageCheckpoint()])
    trainer.fit(model, datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    ckpts = tmp_path / "checkpoints"
    stage1 = torch.load(ckpts / "stage1-localization.ckpt", weights_only=True)["state_dict"]
    stage2 = torch.load(ckpts / "stage2-decision.ckpt", weights_only=True)["state_dict"]
    stage3 = torch.load(ckpts / "stage3-joint.ckpt", weights_only=True)["state_dict"]
    for prefix in ("net.trunk.", "net.lnet."):
        for key, value in params_of(stage1, prefix).items():
            assert torch.equal(value, stage2[key]), f"{key} changed while frozen"
    assert any(not torch.equal(v, stage2[k]) for k, v in params_of(stage1, "net.dnet.").items())
    assert any(not torch.equal(v, stage3[k]) for k, v in params_of(stage2, "net.trunk.").items())
    assert record.stages == ["localization"] * 4 + ["decision"] * 6 + ["joint"] * 2
    assert record.lrs == pytest.approx([0.1] * 4 + [0.01] * 3 + [0.001] * 3 + [0.001] * 2)


def test_resuming_mid_stage_continues_that_stage(kolektor_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    first = tiny_trainer(tmp_path / "a", [StageCheckpoint()], max_steps=6)  # killed 2 steps into stage 2
    first.fit(tiny_module(), datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    mid = tmp_path / "mid.ckpt"
    first.save_checkpoint(mid)
    record = RecordSteps()
    second = tiny_trainer(tmp_path / "b", [record])
    second.fit(tiny_module(), datamodule=make_dm(kolektor_root, image_size=(64, 24)), ckpt_path=str(mid))
    assert second.global_step == 12
    assert record.stages == ["decision"] * 4 + ["joint"] * 2
    assert record.lrs[:2] == pytest.approx([0.01, 0.001])


def test_bf16_mixed_precision_trains_three_stages_and_scores_in_float32(kolektor_root: Path, tmp_path: Path) -> None:
    """``trainer.precision=bf16-mixed`` (the CPU preset): stage 2's feature cache holds bf16 maps, the frozen parts
    stay put, and the test scores are float32 and distinct (bf16 logits of clean parts would tie)."""
    torch.manual_seed(0)
    model = tiny_module()
    trainer = L.Trainer(accelerator="cpu", max_steps=12, max_epochs=-1, logger=False, precision="bf16-mixed",
                        default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[StageCheckpoint()])
    dm = make_dm(kolektor_root, image_size=(64, 24))
    trainer.fit(model, datamodule=dm)
    assert {f.dtype for f, _ in model._frozen_cache.values()} == {torch.bfloat16}
    ckpts = tmp_path / "checkpoints"
    stage1 = torch.load(ckpts / "stage1-localization.ckpt", weights_only=True)["state_dict"]
    stage2 = torch.load(ckpts / "stage2-decision.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, stage2[k]) for k, v in params_of(stage1, "net.trunk.").items())
    assert all(v.dtype == torch.float32 for v in stage2.values() if v.is_floating_point())
    trainer.test(model, datamodule=dm, verbose=False)
    scores = model.fold_result["per_image"]["score"]
    assert scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())
    assert scores.unique().numel() == scores.numel()


def test_rotation_option_trains_on_rotated_batches(kolektor_root: Path, tmp_path: Path) -> None:
    model = tiny_module(rotate=True)
    shapes: list[tuple[int, int]] = []
    localize = model.net.localize

    def spy(x: torch.Tensor):
        if model.training:
            shapes.append(tuple(x.shape[-2:]))
        return localize(x)

    model.net.localize = spy  # type: ignore[method-assign]
    trainer = tiny_trainer(tmp_path, [])
    trainer.fit(model, datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    assert set(shapes) == {(64, 24), (24, 64)}  # some batches turned by 90 or 270 degrees


def test_flip_option_flips_some_batches_and_depends_only_on_the_step() -> None:
    draws = [augmentation_at(step, rotate=False, flip=True) for step in range(40)]
    assert draws == [augmentation_at(step, rotate=False, flip=True) for step in range(40)]  # the step alone
    assert {d[0] for d in draws} == {0}  # no rotation unless asked
    assert {(d[1], d[2]) for d in draws} == {(False, False), (True, False), (False, True), (True, True)}
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert torch.equal(augment(x, 0, True, False), x.flip(3))
    assert torch.equal(augment(x, 0, False, True), x.flip(2))
    assert torch.equal(augment(x, 1, False, False), torch.rot90(x, 1, dims=(2, 3)))
    assert {augmentation_at(step, rotate=False, flip=False) for step in range(20)} == {(0, False, False)}


def test_stage_rates_scale_with_the_optimizer_configs_lr() -> None:
    """The stage rates are the paper's SGD values (lr 0.1); Adam configured at 1e-3 gets them x 0.01."""
    sgd = tiny_module()
    adam = WeakDetectionModule(WeakDefectNet(lnet_wide=8), partial(torch.optim.Adam, lr=1e-3), stages=TINY_STAGES,
                               heatmap_dir=None)
    assert sgd.lr_scale == 1.0 and adam.lr_scale == pytest.approx(0.01)
    optimizer = adam.configure_optimizers()["lr_scheduler"]["scheduler"].optimizer
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * TINY_STAGES[0]["lr"])


class RecordQ(L.Callback):
    def __init__(self) -> None:
        self.q: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = trainer.callback_metrics
        if float(metrics["train/stage"]) == 1:
            self.q.append((float(metrics["train/q_defective"]), float(metrics["train/q_clean"])))


def forced_heatmap_module(bias: float, stage1_iterations: int) -> WeakDetectionModule:
    """A tiny module whose heat map is sigmoid(``bias``) everywhere and stays so (lr 0): stage 1 of
    ``stage1_iterations`` weak-loss steps, then one decision step."""
    torch.manual_seed(0)
    stages = [{"name": "localization", "iterations": stage1_iterations, "lr": 0.0, "train": ["trunk", "lnet"],
               "losses": ["weak"], "alpha": "collaborative"},
              {"name": "decision", "iterations": 1, "lr": 0.0, "train": ["dnet"], "losses": ["bce"]}]
    model = tiny_module(stages=stages)
    torch.nn.init.zeros_(model.net.lnet.head.weight)
    torch.nn.init.constant_(model.net.lnet.head.bias, bias)
    return model


@pytest.mark.parametrize("bias", [-30.0, 0.0])
def test_a_stage_ending_with_a_dark_lnet_warns_and_q_is_logged(kolektor_root: Path, tmp_path: Path,
                                                               bias: float) -> None:
    """Q of defective and clean images is logged each weak step; a heat map dark on the defective images at
    the end of stage 1 (the weak loss's trivial minimum) warns. lr 0 keeps the forced heat map as it is."""
    model = forced_heatmap_module(bias, stage1_iterations=4)
    record = RecordQ()
    trainer = tiny_trainer(tmp_path, [record], max_steps=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=make_dm(kolektor_root, image_size=(64, 24)))
    dark = [w for w in caught if "LNet's heat map dark" in str(w.message)]
    expected_q = 1 / (1 + math.exp(-bias))
    assert len(record.q) == 4 and all(q == pytest.approx((expected_q, expected_q), abs=1e-6) for q in record.q)
    assert len(dark) == (1 if bias < 0 else 0)
    if dark:
        assert "'localization'" in str(dark[0].message) and "Q 0.0000" in str(dark[0].message)


def test_the_frozen_output_cache_is_bounded_and_gives_the_same_outputs() -> None:
    """Stage 2's cache keeps frozen outputs only up to cache_frozen_max_gib; images past it are recomputed, with the
    same result."""
    torch.manual_seed(0)
    x = torch.rand(4, 1, 64, 24)
    entry_bytes = sum(t[0].numel() * t[0].element_size() for t in tiny_module().net.eval().localize(x[:1]))
    model = tiny_module(cache_frozen_max_gib=2.5 * entry_bytes / 2**30).eval()
    indices, k = torch.arange(4), (0, False, False)
    first = model._localize(x, indices, k, frozen=True, stage_index=1)
    assert len(model._frozen_cache) == 2 and model._frozen_bytes <= 2.5 * entry_bytes
    second = model._localize(x, indices, k, frozen=True, stage_index=1)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)
    assert len(model._frozen_cache) == 2
