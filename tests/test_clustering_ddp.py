"""FaissKMeans under DDP with 2 CPU processes: features gathered from both ranks, one clustering, same labels."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks import FaissKMeans
from lightning_modules.cluster import ClusteringModule
from tests.test_clustering_module import neu_dm, neu_root  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


class ReportSync(L.Callback):
    """On rank 0, write whether every rank holds the same pseudo-labels, and the k-means history."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        labels = trainer.datamodule.views_set.pseudo_labels.to(pl_module.device)
        gathered = pl_module.all_gather(labels)
        kmeans = next(c for c in trainer.callbacks if isinstance(c, FaissKMeans))
        if trainer.is_global_zero:
            self.out.write_text(json.dumps({
                "world_size": trainer.world_size,
                "same_labels": bool((gathered == gathered[0]).all()),
                "n_train": int(labels.numel()),
                "history": kmeans.history,
            }))


def test_two_ranks_cluster_once_on_all_features(neu_root: Path, tmp_path: Path) -> None:  # noqa: F811
    torch.manual_seed(0)
    model = ClusteringModule(partial(torch.optim.AdamW, lr=1e-3), backbone="convnextv2_atto", num_clusters=6,
                             num_classes=6, warmup_steps=1, max_steps=4)
    report = tmp_path / "sync.json"
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=4, max_epochs=-1,
                        logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        default_root_dir=str(tmp_path),
                        callbacks=[FaissKMeans(num_clusters=6, every_n_steps=2, pca_dim=8, nredo=1),
                                   ReportSync(report)])
    trainer.fit(model, datamodule=neu_dm(neu_root))
    out = json.loads(report.read_text())
    assert out["world_size"] == 2 and out["same_labels"]
    assert len(out["history"]) == 2  # at the start and at step 2
    assert all(sum(h["sizes"]) == out["n_train"] for h in out["history"])  # every image, from both ranks
