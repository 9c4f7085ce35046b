"""A callback for the DDP tests, added to a ``train.py`` run by
``+callbacks.probe._target_=tests.ddp_probe.DDPProbe +callbacks.probe.out=<json>``: at the end of training, rank 0
writes what each rank trained on and whether the ranks' weights agree."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist


class DDPProbe(L.Callback):
    """Record every training batch's image indices (and labels) per rank; at the end of ``fit`` gather them and
    the ranks' flattened weights (and pseudo-labels, for the clustering method), and write ``out`` (JSON) from
    rank 0: ``world_size``, ``same_weights``, ``same_pseudo_labels``, ``kmeans_sizes`` (a callback's ``history``),
    ``batches`` ([rank][step] -> indices) and ``labels`` ([rank][step] -> labels). ``desync_rng``: rank 1 draws
    extra random numbers before each step, so that anything drawn per rank afterwards differs between ranks."""

    def __init__(self, out: str, label_key: str = "label", desync_rng: bool = False) -> None:
        self.out = Path(out)
        self.label_key = label_key
        self.desync_rng = desync_rng
        self.batches: list[list[int]] = []
        self.labels: list[list[float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if self.desync_rng and trainer.global_rank == 1:  # rank 1's random stream runs ahead of rank 0's
            torch.rand(7)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.batches.append(batch["index"].tolist())
        self.labels.append(batch[self.label_key].float().tolist())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        weights = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        gathered = pl_module.all_gather(weights)
        records: list = [None] * trainer.world_size
        if trainer.world_size > 1:
            dist.all_gather_object(records, (self.batches, self.labels))
        else:
            records = [(self.batches, self.labels)]
        views = getattr(pl_module.training_plan, "pseudo_labels", None)  # the clustering method's pseudo-labels
        pseudo = pl_module.all_gather(views.to(pl_module.device)) if views is not None else None
        history = next((c.history for c in trainer.callbacks if hasattr(c, "history")), [])
        if trainer.is_global_zero:
            def same(x: torch.Tensor) -> bool:
                return bool((x == x[0]).all()) if trainer.world_size > 1 else True

            self.out.write_text(json.dumps({
                "world_size": trainer.world_size,
                "same_weights": same(gathered),
                "same_pseudo_labels": same(pseudo) if pseudo is not None else None,
                "kmeans_sizes": [h["sizes"] for h in history],
                "batches": [r[0] for r in records],
                "labels": [r[1] for r in records],
            }))
