"""callbacks=true_labels: the clustering method's classifier trained on the true classes (a supervised ceiling)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks import TrueLabels
from datamodules import NEUDataModule
from datamodules.synthetic import write_neu_cls
from datamodules.views import MultiCropViews
from lightning_modules.cluster import ClusteringModule
from lightning_modules.cluster.plan import PseudoLabelViews
from tests.helpers import compose_cfg
from train import build_callbacks


def test_the_group_swaps_kmeans_for_the_true_classes(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=cluster_neu_cpu", "callbacks=true_labels"])
    names = [type(c).__name__ for c in build_callbacks(cfg, tmp_path)]
    assert "TrueLabels" in names and "PseudoLabelReassigner" not in names
    plain = [type(c).__name__ for c in build_callbacks(compose_cfg(["experiment=cluster_neu_cpu"]), tmp_path)]
    assert "PseudoLabelReassigner" in plain and "TrueLabels" not in plain


def fit(root: Path, num_clusters: int,
        targets: torch.Tensor | None = None) -> tuple[NEUDataModule, ClusteringModule]:
    torch.manual_seed(0)
    views = MultiCropViews(global_size=32, local_size=32, n_global=1, n_local=1)
    dm = NEUDataModule(root=root, image_size=(32, 32), eval_batch_size=16)
    model = ClusteringModule(partial(torch.optim.AdamW, lr=1e-3), backbone="resnet18", num_clusters=num_clusters,
                             num_classes=6, warmup_steps=1, max_steps=2,
                             training_plan=PseudoLabelViews(views, batch_size=8))
    if targets is not None:
        dm.setup("fit")
        dm.train_set.targets = targets
    trainer = L.Trainer(accelerator="cpu", max_steps=2, max_epochs=-1, logger=False, callbacks=[TrueLabels()],
                        enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    return dm, model


def test_training_sees_the_true_classes_and_refuses_unknown_ones(tmp_path: Path) -> None:
    root = write_neu_cls(tmp_path / "NEU-CLS", per_class=4, size=(32, 32), seed=1)
    dm, model = fit(root, 6)
    assert torch.equal(model.training_plan.pseudo_labels, dm.train_set.targets)
    assert set(dm.train_set.targets.tolist()) == set(range(6))
    with pytest.raises(ValueError, match="head 3 outputs"):
        fit(root, 3)
    unknown = torch.full((len(dm.train_set),), -1, dtype=torch.long)
    with pytest.raises(ValueError, match="images without one"):
        fit(root, 6, targets=unknown)
