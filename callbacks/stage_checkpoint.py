"""Save a checkpoint at the end of each training stage of a staged module (e.g. the weak method)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class StageCheckpoint(L.Callback):
    """Write ``stage{i}-{name}.ckpt`` into ``dirpath`` when the global step reaches a stage's end.

    Works with any module exposing ``plan`` (a :class:`~lightning_modules.weak.stages.StagePlan`).
    A checkpoint holds the global step, so ``ckpt_path=`` on it, or on ``last.ckpt`` written mid-stage,
    resumes inside the right stage.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        plan = getattr(pl_module, "plan", None)
        if plan is None:
            return
        step = trainer.global_step
        for i, (stage, end) in enumerate(zip(plan.active, plan.ends, strict=True)):
            if step == end:
                directory = Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints")
                path = directory / f"stage{i + 1}-{stage.name}.ckpt"
                trainer.save_checkpoint(path)  # the full training state (optimizer, loops): resumable
                rank_zero_info(f"stage {i + 1} ({stage.name}) done at step {step}: {path}")
