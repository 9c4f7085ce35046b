"""Use the averaged weights of the trainer's weight-averaging callback, where it has one.

Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (e.g. ``EMAWeightAveraging``, an exponential
moving average of the weights) keeps the average in a copy of the module and swaps it in only for validation
and at the end of training. :func:`averaged_weights` swaps it in for the duration of a ``with`` block, so that
the PseudoLabelReassigner callback can cluster the averaged model's features (a mean teacher's pseudo-labels) while the
optimizer keeps updating the current weights; :func:`restart_average` restarts the average of a part that was
re-initialised.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

# Lightning keeps the average in WeightAveraging._average_model (a torch AveragedModel; its .module has the
# LightningModule's layout) and swaps it in and out with WeightAveraging._swap_models, as its validation does;
# tests/test_averaged_weights.py checks that both still behave so.


def weight_averaging(trainer: L.Trainer) -> WeightAveraging | None:
    """The trainer's weight-averaging callback once it holds an average (it makes one when fitting starts), or
    None."""
    averaging = next((c for c in trainer.callbacks if isinstance(c, WeightAveraging)), None)
    return averaging if averaging is not None and getattr(averaging, "_average_model", None) is not None else None


@contextmanager
def averaged_weights(trainer: L.Trainer, pl_module: L.LightningModule) -> Iterator[bool]:
    """Swap the averaged weights (and buffers) into ``pl_module`` inside the block, and back after it. Yields
    whether they were swapped (False without an average: see :func:`weight_averaging`)."""
    averaging = weight_averaging(trainer)
    if averaging is None:
        yield False
        return
    averaging._swap_models(pl_module)
    try:
        yield True
    finally:
        averaging._swap_models(pl_module)


@torch.no_grad()
def restart_average(trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> bool:
    """Copy the current weights of ``pl_module.<name>`` into the average: after that part is re-initialised (the
    classifier head after a reassignment that renumbers the clusters), its old weights mean nothing and must not
    be averaged with the new. Returns whether there was an average to restart."""
    averaging = weight_averaging(trainer)
    if averaging is None:
        return False
    averaged = averaging._average_model.module.get_submodule(name).state_dict()
    current = pl_module.get_submodule(name).state_dict()
    for key, value in current.items():
        averaged[key].copy_(value)
    return True
