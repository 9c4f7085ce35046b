"""Batch samplers that pair defective with defect-free images, as the weak method trains (Xu et al. IV.A)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class BalancedBatchSampler(Sampler[list[int]]):
    """Yield batches of ``pairs`` defective + ``pairs`` defect-free indices, alternating within the batch.

    With ``pairs=1`` a batch is the paper's iteration: one defective and one defect-free image. The
    defect-free images are each seen once per epoch; the (fewer) defective images are cycled in a fresh
    random order as often as needed. The order depends only on ``seed`` and the epoch, set by Lightning
    through :meth:`set_epoch`.
    """

    def __init__(self, defective: Sequence[int], clean: Sequence[int], pairs: int = 1, seed: int = 0) -> None:
        if not defective or not clean:
            raise ValueError(
                f"balanced batches need defective and defect-free images; got {len(defective)} and {len(clean)}"
            )
        self.defective = list(defective)
        self.clean = list(clean)
        self.pairs = pairs
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.clean) / self.pairs)

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        clean = [self.clean[i] for i in torch.randperm(len(self.clean), generator=gen)]
        defective: list[int] = []
        while len(defective) < len(clean):
            defective += [self.defective[i] for i in torch.randperm(len(self.defective), generator=gen)]
        for start in range(0, len(clean), self.pairs):
            chunk = clean[start : start + self.pairs]
            batch: list[int] = []
            for d, c in zip(defective[start : start + len(chunk)], chunk, strict=True):
                batch += [d, c]
            yield batch


class UniformOverLabelsSampler(Sampler[int]):
    """Draw ``num_samples`` indices per epoch: a label uniformly among the non-empty ones, then a member.

    Reads ``labels`` (a tensor shared with the dataset) at every draw, so a reassignment of
    pseudo-labels mid-epoch takes effect at once, and one large cluster cannot swallow the training.
    """

    def __init__(self, labels: torch.Tensor, num_samples: int | None = None, seed: int = 0) -> None:
        self.labels = labels
        self.num_samples = num_samples or len(labels)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        for _ in range(self.num_samples):
            present = torch.unique(self.labels)
            label = present[torch.randint(len(present), (1,), generator=gen)]
            members = torch.nonzero(self.labels == label).flatten()
            yield int(members[torch.randint(len(members), (1,), generator=gen)])
