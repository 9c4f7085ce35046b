"""A training DataLoader that Lightning resumes mid-epoch where it stopped, with the random state it had.

Lightning (2.x) saves and restores the state of a training loader only when the loader itself has
``state_dict``/``load_state_dict``; otherwise a resumed run replays the interrupted epoch from its first
batch. :class:`ResumableDataLoader` is that loader for this project's samplers (and any sampler or batch
sampler whose order is a function of its epoch, e.g. :class:`~datamodules.sampling.BalancedBatchSampler`,
:class:`~datamodules.sampling.UniformOverLabelsSampler`, or either inside
:class:`~datamodules.sampling.ShardedBatchSampler`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader


def rng_states() -> dict[str, Any]:
    """The process's global random states (torch CPU and CUDA, numpy, python), in checkpoint-safe types
    (tensors, numbers, tuples: loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class _SkipFirst:
    """An index sampler whose next pass (only) leaves out its first ``skip`` items; nothing is loaded for them."""

    def __init__(self, base: Iterable, skip: int) -> None:
        self.base = base
        self.skip = skip

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        skip, self.skip = self.skip, 0
        return islice(iter(self.base), skip, None)


class ResumableDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` that Lightning saves and restores mid-epoch.

    It counts its passes (epochs) and the batches it has handed out in the current one, and calls
    ``set_epoch(epoch)`` on its batch sampler and sampler at the start of every pass (Lightning calls
    ``set_epoch`` on ``loader.sampler`` and ``loader.batch_sampler.sampler`` only, never on a custom batch
    sampler such as :class:`~datamodules.sampling.BalancedBatchSampler`, whose epochs would otherwise all
    have the same order).

    Its :meth:`state_dict` (saved by Lightning in every checkpoint, under ``loops.fit_loop.state_dict.
    combined_loader``) holds the epoch, the batches handed out and the process's global random states.
    After :meth:`load_state_dict` the next pass is that epoch, without its first batches (skipped by index,
    so no data is read and no random transform runs for them), and the random states are restored just
    before the first batch is read, where the uninterrupted run was when the checkpoint was saved: random
    view transforms, dropout and re-initialisations then draw the same numbers. Exact with
    ``num_workers=0``; worker processes are re-seeded at the resumed pass, so their transforms differ.
    Under DDP a checkpoint holds rank 0's random states, restored on every rank. One loader serves a whole
    ``fit`` (Lightning's default; with ``reload_dataloaders_every_n_epochs`` each new loader would count
    its epochs from 0 again).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_epoch = 0
        self._epoch = 0
        self._batches = 0
        self._skip = 0
        self._resume_rng: dict[str, Any] | None = None

    @property
    def _index_sampler(self) -> Iterable:
        # torch's (private) hook: the batch sampler, or the sampler, that the loader's iterator draws from
        base = super()._index_sampler
        return _SkipFirst(base, self._skip) if self._skip else base

    def _set_epoch(self, epoch: int) -> None:
        for obj in {id(o): o for o in (self.batch_sampler, self.sampler) if o is not None}.values():
            if callable(getattr(obj, "set_epoch", None)):
                obj.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        # a generator: nothing runs before the first batch is asked for (Lightning creates the iterator of
        # an epoch before it calls set_epoch, and sometimes only to check that the loader is iterable)
        epoch, skip, rng = self._next_epoch, self._skip, self._resume_rng
        self._next_epoch, self._epoch, self._batches, self._resume_rng = epoch + 1, epoch, skip, None
        self._set_epoch(epoch)
        if rng is not None and not skip:  # saved at an epoch's end: the next epoch's iterator came after it
            set_rng_states(rng)
        iterator = super().__iter__()  # consumes the skip; may draw a worker seed from the global generator
        self._skip = 0
        if rng is not None and skip:  # saved mid-epoch: the iterator existed already
            set_rng_states(rng)
        for batch in iterator:
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Where the current pass is: ``{"epoch", "batches", "rng"}``."""
        return {"epoch": self._epoch, "batches": self._batches, "rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next pass continue the saved one (or start the epoch after it, when it was complete)."""
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self._next_epoch, self._skip, self._resume_rng = epoch, batches, state_dict.get("rng")
