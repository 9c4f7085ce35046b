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
