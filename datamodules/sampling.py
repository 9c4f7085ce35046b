"""Batch samplers that pair defective with defect-free images, as the weak method trains (Xu et al. IV.A)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import torch
from torch.utils.data import Sampler

from datamodules.errors import DatasetError


class BalancedBatchSampler(Sampler[list[int]]):
    """Yield batches of ``pairs`` defective + ``pairs`` defect-free indices, alternating within the batch.

    With ``pairs=1`` a batch is the paper's iteration: one defective and one defect-free image. The
    defect-free images are each seen once per epoch; the (fewer) defective images are cycled in a fresh
    random order as often as needed. The order depends only on ``seed`` and the epoch, set through
    :meth:`set_epoch` by :class:`~datamodules.resumable.ResumableDataLoader` (Lightning itself never calls
    ``set_epoch`` on a custom batch sampler: every epoch would repeat epoch 0's order).
    """

    def __init__(self, defective: Sequence[int], clean: Sequence[int], pairs: int = 1, seed: int = 0) -> None:
        if not defective or not clean:
            raise DatasetError(
                f"the training images hold {len(defective)} defective and {len(clean)} defect-free images: a detection "
                "method learns from both (data=folder: the defect-free images in the folder named by "
                "data.defect_free_class, the defective ones in other class folders)"
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
    pseudo-labels mid-epoch takes effect with the next draw, and one large cluster cannot swallow the training.
    With loader workers the batches they have already drawn (``prefetch_factor`` x ``num_workers``) keep the old
    clusters' balance for those few steps; their labels are still the new ones (re-read before the transfer).
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


class ShardedBatchSampler(Sampler[list[int]]):
    """One DDP rank's share of a batch sampler: global step ``k`` is the base batches ``k*W .. k*W+W-1``, rank ``r``
    takes batch ``k*W + r`` (``W = num_replicas``).

    Every rank builds the same base sampler (same seed, same epoch), so the ranks train on different batches
    and together on ``W`` consecutive base batches per step; with ``W == 1`` the base passes through
    unchanged. An epoch has ``len(batch_sampler) // W`` steps: a tail of fewer than ``W`` base batches is left
    out, so that every rank takes the same number of steps (a rank with one batch more would hang the
    others in DDP's gradient all-reduce). Lightning does not shard a custom batch sampler itself (it
    raises); the trainer's ``use_distributed_sampler`` must be ``false`` (``conf/trainer/ddp*.yaml``).

    With ``distinct_period`` set, no index appears twice in one global step where this can be avoided: a
    repeat (e.g. a defective image at the reshuffle of :class:`BalancedBatchSampler`'s defective cycle) is
    swapped with the index at an equivalent place (same position modulo ``distinct_period``; 2 keeps
    defective and defect-free places apart) of another step of the epoch, later steps first. The epoch is
    then drawn whole at its start. Leave it ``None`` for samplers that draw with replacement.
    """

    def __init__(self, batch_sampler: Iterable[list[int]], num_replicas: int, rank: int,
                 distinct_period: int | None = None) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is out of range for {num_replicas} replicas")
        self.batch_sampler = batch_sampler
        self.num_replicas = num_replicas
        self.rank = rank
        self.distinct_period = distinct_period

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to the base batch sampler, or to its index sampler (``BatchSampler.sampler``)."""
        for obj in (self.batch_sampler, getattr(self.batch_sampler, "sampler", None)):
            if callable(getattr(obj, "set_epoch", None)):
                obj.set_epoch(epoch)
                return

    @property
    def sampler(self) -> ShardedBatchSampler:
        """Itself: Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler``, not on the batch sampler."""
        return self

    def __len__(self) -> int:
        if self.num_replicas == 1:
            return len(self.batch_sampler)  # type: ignore[arg-type]
        return len(self.batch_sampler) // self.num_replicas  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        if self.num_replicas == 1:
            yield from self.batch_sampler
            return
        steps: Iterable[list[list[int]]] = self._steps(iter(self.batch_sampler))
        if self.distinct_period:
            steps = distinct_steps(steps, self.distinct_period)
        for step in steps:
            yield step[self.rank]

    def _steps(self, batches: Iterator[list[int]]) -> Iterator[list[list[int]]]:
        while len(step := [list(b) for b in islice(batches, self.num_replicas)]) == self.num_replicas:
            yield step


def distinct_steps(steps: Iterable[list[list[int]]], period: int) -> list[list[list[int]]]:
    """The steps (each a list of per-rank batches) with repeats inside a step swapped away where possible.

    A repeated index ``x`` at position ``j`` of a step is swapped with an index ``y`` at a position ``j'`` of
    another step, ``j' = j`` modulo ``period``, such that ``y`` is not in the step and ``x`` not in the other one:
    both steps stay free of repeats, and the multiset of the epoch's indices is unchanged. Deterministic, so
    every rank computes the same steps.
    """
    steps = [[list(b) for b in step] for step in steps]
    for s, step in enumerate(steps):
        seen: set[int] = set()
        for batch in step:
            for j, x in enumerate(batch):
                if x in seen:
                    _swap_repeat(steps, s, batch, j, period)
                seen.add(batch[j])
    return steps


def _swap_repeat(steps: list[list[list[int]]], s: int, batch: list[int], j: int, period: int) -> None:
    here = {i for b in steps[s] for i in b}
    for t in [*range(s + 1, len(steps)), *range(s - 1, -1, -1)]:
        there = {i for b in steps[t] for i in b}
        if batch[j] in there:
            continue
        for other in steps[t]:
            for k in range(j % period, len(other), period):
                if other[k] not in here:
                    batch[j], other[k] = other[k], batch[j]
                    return
