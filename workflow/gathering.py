"""Per-image results gathered over DDP ranks (each image once, in id order), and a fold's result handed from
the test processes to the process that runs ``train.py``'s loop."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torchmetrics.utilities.distributed import gather_all_tensors

from workflow.run_warnings import module_warnings

#: the file, in the trainer's ``default_root_dir`` (``<run dir>/fold<k>``), that holds a fold's result
FOLD_RESULT_FILE = "fold_result.pt"


def unique_by_id(ids: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sort by ``ids`` and drop repeated ids (a DistributedSampler pads the last batch with repeats).

    Returns ``(ids, *values)`` with the same order applied to every tensor in ``values``.
    """
    ids, order = ids.long().sort(stable=True)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[1:] = ids[1:] != ids[:-1]
    return (ids[keep], *(v[order][keep] for v in values))


def world_size() -> int:
    """Processes in the default process group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every rank concatenated along dim 0, in rank order (lengths may differ between ranks);
    ``tensor`` itself without DDP. A collective: every rank must call it."""
    if world_size() == 1:
        return tensor
    return torch.cat(gather_all_tensors(tensor.contiguous()))


def gather_unique(ids: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(ids, *values) of every rank, each id once (:func:`unique_by_id`): what one process would have seen
    on the whole set, whatever the DistributedSampler repeated to pad."""
    return unique_by_id(all_gather_cat(ids), *(all_gather_cat(v) for v in values))


def cat_state(state: list[torch.Tensor] | torch.Tensor, dtype: torch.dtype,
              device: torch.device | str = "cpu", shape: tuple[int, ...] = ()) -> torch.Tensor:
    """A torchmetrics list state as one tensor along dim 0; empty (``(0, *shape)``) when nothing was added."""
    if isinstance(state, torch.Tensor):
        return state
    return torch.cat(state) if state else torch.empty((0, *shape), dtype=dtype, device=device)


class FoldResultWriter(L.Callback):
    """At the end of ``trainer.test``, rank 0 saves ``pl_module.fold_result`` to ``<default_root_dir>/fold_result.pt``.

    Under ``ddp_spawn`` the test runs in spawned workers: the ``fold_result`` they set never reaches the
    process that called ``trainer.test``, which reads the file instead (:func:`load_fold_result`), the same
    way for every strategy. A stale file is removed when the test starts; all ranks wait for rank 0's write,
    so under ``ddp`` every rank finds the file once ``trainer.test`` returns.
    """

    def __init__(self, attribute: str = "fold_result") -> None:
        self.attribute = attribute

    @staticmethod
    def path(trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / FOLD_RESULT_FILE

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path(trainer).unlink(missing_ok=True)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            result = getattr(pl_module, self.attribute, None)
            if result:
                result = {**result, "warnings": module_warnings(pl_module)}  # workflow.run_warnings
                path = self.path(trainer)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save(dict(result), tmp)
                tmp.replace(path)
        trainer.strategy.barrier("fold_result")


def load_fold_result(fold_dir: str | Path) -> dict[str, Any]:
    """The fold result :class:`FoldResultWriter` saved in ``fold_dir`` (tensors on the CPU)."""
    path = Path(fold_dir) / FOLD_RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the test did not finish, or FoldResultWriter was not a callback")
    result = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(result, Mapping)
    return dict(result)
