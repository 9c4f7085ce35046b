"""Validation on held-out training groups (data.val_fraction) and the best checkpoint chosen on it."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.checkpoint import BestCheckpoint
from lightning_modules.weak import WeakDetectionModule
from tests.test_kolektor_datamodule import make_dm
from tests.test_stages import tiny_module


def test_val_fraction_holds_out_whole_training_groups_stratified(kolektor_root: Path) -> None:
    dm = make_dm(kolektor_root, image_size=(64, 24), val_fraction=0.25)
    dm.setup()
    train, val, test = ({s.group for s in x} for x in (dm.train_samples, dm.val_samples, dm.test_samples))
    assert val and not (val & train) and not (val & test)  # whole commutators, apart from train and test
    assert len(val) == 2  # a quarter of the 8 training commutators
    assert any(s.label == 1 for s in dm.val_samples) and any(s.label == 0 for s in dm.val_samples)
    assert len(dm.val_dataloader().dataset) == len(dm.val_samples)
    plain = make_dm(kolektor_root, image_size=(64, 24))
    plain.setup()
    assert plain.val_samples == [] and plain.val_dataloader() == []
    assert {s.group for s in plain.train_samples} == train | val


def fit(root: Path, tmp_path: Path, **data) -> tuple[BestCheckpoint, list[float]]:
    best, seen, _, _ = fit_module(root, tmp_path, **data)
    return best, seen


def fit_module(root: Path, tmp_path: Path, **data) -> tuple[BestCheckpoint, list[float], L.LightningModule, object]:
    seen: list[float] = []

    class Record(L.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            seen.append(float(trainer.callback_metrics["val/ap"]))

    best = BestCheckpoint(dirpath=str(tmp_path / "checkpoints"))
    trainer = L.Trainer(accelerator="cpu", max_steps=12, max_epochs=-1, logger=False, callbacks=[best, Record()],
                        default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                        val_check_interval=4, num_sanity_val_steps=0, gradient_clip_val=1.0)
    module, dm = tiny_module(), make_dm(root, image_size=(64, 24), **data)
    trainer.fit(module, datamodule=dm)
    return best, seen, module, dm


def test_best_checkpoint_keeps_the_highest_validation_ap(kolektor_root: Path, tmp_path: Path) -> None:
    best, seen = fit(kolektor_root, tmp_path, val_fraction=0.25)
    assert len(seen) == 3  # steps 4, 8, 12
    assert Path(best.best_model_path).name == "best.ckpt"
    assert float(best.best_model_score) == max(seen)
    state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    assert state["global_step"] == 4 * (1 + seen.index(max(seen)))
    loaded = WeakDetectionModule.load_from_checkpoint(best.best_model_path, map_location="cpu", weights_only=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state["state_dict"].items())


def test_without_validation_data_no_best_checkpoint(kolektor_root: Path, tmp_path: Path) -> None:
    best, seen = fit(kolektor_root, tmp_path)
    assert seen == [] and best.best_model_path == ""
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").glob("best*.ckpt"))


def test_validation_log_loss_is_the_image_scores_cross_entropy(kolektor_root: Path, tmp_path: Path) -> None:
    """The last validation's AP and log loss (what settings are chosen on) are those of the final weights."""
    _, seen, module, dm = fit_module(kolektor_root, tmp_path, val_fraction=0.25)
    module.eval()
    with torch.no_grad():
        logits, labels = zip(*((module.net(b["image"])[1], b["label"].float()) for b in dm.val_dataloader()),
                             strict=True)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(labels))
    last = module.last_validation
    assert last["val_step"] == 12 and last["val_ap"] == seen[-1]
    assert last["val_log_loss"] == pytest.approx(float(expected), rel=1e-4)
