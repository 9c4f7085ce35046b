"""``ModelCheckpoint`` whose ``last.ckpt`` holds the final training step too."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """:class:`~lightning.pytorch.callbacks.ModelCheckpoint` that also writes ``last.ckpt`` when training ends.

    Lightning's writes ``last.ckpt`` at the end of training only if it has written none before, so with
    ``every_n_train_steps=100`` a 2250-step run keeps the weights of step 2200 there (and a 140-step demo
    those of step 100). With ``save_last`` set, this one saves the final step as well, unless it already has.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class BestCheckpoint(ModelCheckpoint):
    """``best.ckpt``: the checkpoint of the highest ``monitor`` (``val/ap``) on the validation set, the training
    groups held out by ``data.val_fraction``. Never chosen on the test fold; without validation data it saves
    nothing (neither method validates by default)."""

    def __init__(self, monitor: str = "val/ap", mode: str = "max", filename: str = "best", **kwargs) -> None:
        super().__init__(monitor=monitor, mode=mode, filename=filename, save_top_k=1, auto_insert_metric_name=False,
                         **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        datamodule = getattr(trainer, "datamodule", None)
        if not getattr(datamodule, "val_samples", None):
            self.save_top_k = 0  # no validation data: nothing to choose on
