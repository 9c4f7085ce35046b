"""What a DataModule asks of a method's training plan: the training loader, and optional batch-transfer hooks.

A DataModule lists and serves samples (:class:`~datamodules.dataset.SampleDataset`); how a method samples and
augments them for training is the method's *training plan* (e.g. ``lightning_modules.weak.plan.BalancedPairs``,
``lightning_modules.cluster.plan.PseudoLabelViews``), held by the LightningModule as ``training_plan`` and
configured as ``model.training_plan``. :meth:`datamodules.base.DefectDataModule.train_dataloader` gets it from the
attached trainer's module and calls :meth:`TrainingPlan.train_dataloader`; its ``on_before_batch_transfer`` /
``on_after_batch_transfer`` call the plan's hooks of the same names, where the plan has them, for training batches.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch.utils.data import DataLoader

from datamodules.dataset import SampleDataset


@runtime_checkable
class TrainingPlan(Protocol):
    """The one required method; the optional hooks are described below.

    ``on_before_batch_transfer(batch, dataloader_idx) -> batch``: a training batch before it moves to the device.

    ``on_after_batch_transfer(batch, dataloader_idx, global_step) -> batch``: a training batch on the training
    device; ``global_step`` is the trainer's optimizer step (for random draws that a resumed run repeats).
    """

    def train_dataloader(self, dataset: SampleDataset, world: int, rank: int, num_workers: int,
                         seed: int) -> DataLoader:
        """The training loader over ``dataset`` for DDP rank ``rank`` of ``world`` (1, 0 in one process), with
        ``num_workers`` loader workers, its order seeded by ``seed`` (``data.seed``)."""
        ...


def call_hook(plan: Any, name: str, batch: Any, *args: Any) -> Any:
    """``plan.<name>(batch, *args)`` where the plan has that hook, else ``batch`` unchanged."""
    hook = getattr(plan, name, None)
    return hook(batch, *args) if callable(hook) else batch
