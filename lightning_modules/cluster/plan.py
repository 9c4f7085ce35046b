"""The clustering method's training plan: multi-view crops of images with their current pseudo-labels
(Bai et al. 2024, 3.2), images drawn uniformly over the pseudo-classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from datamodules.dataset import SampleDataset
from datamodules.resumable import ResumableDataLoader
from datamodules.sampling import ShardedBatchSampler, UniformOverLabelsSampler


class ViewsDataset(Dataset):
    """Training items: the views of an image and its current pseudo-label (read from ``pseudo_labels``, a tensor
    in shared memory, so loader workers see a reassignment).

    With a per-batch views transform (``views.per_batch``, :class:`datamodules.views.BatchedMultiCropViews`) an item
    holds the decoded image instead (``"image"``, uint8) and :meth:`PseudoLabelViews.on_after_batch_transfer` makes
    the views on the training device.
    """

    def __init__(self, base: SampleDataset, views: Callable[..., list[torch.Tensor]],
                 pseudo_labels: torch.Tensor) -> None:
        self.base = base
        self.views = views
        self.per_batch = bool(getattr(views, "per_batch", False))
        self.pseudo_labels = pseudo_labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"pseudo_label": self.pseudo_labels[index], "index": index}
        if self.per_batch:
            return item | {"image": self.base.pixels(index)}
        return item | {"views": self.views(self.base.pixels(index).float().div_(255.0))}


class PseudoLabelViews:
    """Batches of ``batch_size`` images drawn uniformly over the current pseudo-classes
    (:class:`~datamodules.sampling.UniformOverLabelsSampler`), each as its ``views`` and pseudo-label.

    The pseudo-labels live here, in shared memory (:attr:`pseudo_labels`): the reassigning callback sets them
    with :meth:`set_pseudo_labels`, and the sampler and the loader workers read the current ones. A batch a worker
    prefetched before a reassignment gets its labels re-read before the transfer (:meth:`on_before_batch_transfer`).
    Under DDP (``W`` ranks) a global step is ``W * batch_size`` images, one batch per rank.

    Args:
        views: the multi-view transform (:class:`datamodules.views.MultiCropViews`, per image in the loader, or
            :class:`datamodules.views.BatchedMultiCropViews`, per batch on the training device).
        batch_size: images per training batch (per rank).
    """

    def __init__(self, views: Callable[..., list[torch.Tensor]], batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"model.training_plan.batch_size must be >= 1, got {batch_size}")
        self.views = views
        self.batch_size = int(batch_size)
        self.per_batch = bool(getattr(views, "per_batch", False))
        self.pseudo_labels = torch.zeros(0, dtype=torch.long).share_memory_()
        self.seed, self.rank = 0, 0
        self._batch_of_step: tuple[int | None, int] = (None, -1)

    def _labels_for(self, size: int) -> torch.Tensor:
        if len(self.pseudo_labels) != size:
            self.pseudo_labels = torch.zeros(size, dtype=torch.long).share_memory_()
        return self.pseudo_labels

    def train_dataloader(self, dataset: SampleDataset, world: int, rank: int, num_workers: int,
                         seed: int) -> DataLoader:
        self.seed, self.rank = seed, rank
        views_set = ViewsDataset(dataset, self.views, self._labels_for(len(dataset)))
        sampler = UniformOverLabelsSampler(views_set.pseudo_labels, seed=seed)
        if world == 1:
            return ResumableDataLoader(views_set, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                                       num_workers=num_workers, persistent_workers=num_workers > 0)
        batches = ShardedBatchSampler(BatchSampler(sampler, self.batch_size, drop_last=True), world, rank)
        return ResumableDataLoader(views_set, batch_sampler=batches, num_workers=num_workers,
                                   persistent_workers=num_workers > 0)

    def set_pseudo_labels(self, labels: torch.Tensor) -> None:
        """Replace the training images' pseudo-labels in place (the sampler and the loader workers see the change).
        Before the first loader they are stored for it (its training set must have as many images)."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(self.pseudo_labels) and len(labels) != len(self.pseudo_labels):
            raise ValueError(f"{len(labels)} pseudo-labels for {len(self.pseudo_labels)} training images")
        self._labels_for(len(labels)).copy_(labels)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A batch's pseudo-labels re-read from the current assignment (a batch a loader worker prefetched before a
        reassignment carries the old ones)."""
        if isinstance(batch, dict) and "pseudo_label" in batch:
            batch["pseudo_label"] = self.pseudo_labels[batch["index"]]
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int, global_step: int = 0) -> Any:
        """With a per-batch views transform: the views made here, on the training device, from the decoded images
        (random draws from :meth:`views_generator`)."""
        if self.per_batch and isinstance(batch, dict) and "image" in batch and "pseudo_label" in batch:
            images = batch.pop("image").float().div_(255.0)
            batch["views"] = self.views(images, self.views_generator(images.device, global_step))
        return batch

    def views_generator(self, device: torch.device, step: int) -> torch.Generator:
        """The per-batch views' random stream: seeded by the seed, the global step, the rank and the batch's place
        among those of the same step (several with gradient accumulation), so a resumed run draws the same views."""
        last_step, count = self._batch_of_step
        count = count + 1 if step == last_step else 0
        self._batch_of_step = (step, count)
        return torch.Generator(device).manual_seed(((self.seed * 1_000_003 + step) * 1009 + self.rank) * 31 + count)
