"""The weak method's training plan: balanced batches of defective and defect-free images (Xu et al. IV.A)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from datamodules.dataset import SampleDataset
from datamodules.resumable import ResumableDataLoader
from datamodules.sampling import BalancedBatchSampler, ShardedBatchSampler


class BalancedPairs:
    """Each training batch ``pairs_per_batch`` defective + as many defect-free images, alternating
    (:class:`~datamodules.sampling.BalancedBatchSampler`; 1 = the paper's iteration of one of each).

    Under DDP (``W`` ranks) a global step is one batch per rank, ``W`` balanced batches in all, consecutive
    batches of the same seeded order (:class:`~datamodules.sampling.ShardedBatchSampler`, no image twice in a step
    where avoidable); the step counts of the stage plan are unchanged.
    """

    def __init__(self, pairs_per_batch: int = 1) -> None:
        if pairs_per_batch < 1:
            raise ValueError(f"model.training_plan.pairs_per_batch must be >= 1, got {pairs_per_batch}")
        self.pairs_per_batch = int(pairs_per_batch)

    def train_dataloader(self, dataset: SampleDataset, world: int, rank: int, num_workers: int,
                         seed: int) -> DataLoader:
        labels = dataset.labels
        sampler = BalancedBatchSampler(
            defective=torch.nonzero(labels == 1).flatten().tolist(),
            clean=torch.nonzero(labels == 0).flatten().tolist(),
            pairs=self.pairs_per_batch,
            seed=seed,
        )
        if world > 1:
            sampler = ShardedBatchSampler(sampler, world, rank, distinct_period=2)
        return ResumableDataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                   persistent_workers=num_workers > 0)
