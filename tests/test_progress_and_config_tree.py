"""The config printed as a tree at start; progress bars for feature extraction and clustering."""

from __future__ import annotations

import io

import numpy as np
import rich.console
import torch
from omegaconf import open_dict

from callbacks.pseudo_labels import PseudoLabelReassigner
from tests.helpers import compose_cfg
from workflow.config_tree import config_tree


def test_config_tree_shows_every_group_first_and_resolved_values() -> None:
    cfg = compose_cfg(["experiment=demo", "seed=7"])
    with open_dict(cfg):
        del cfg["hydra"]
    console = rich.console.Console(file=io.StringIO(), width=120, color_system=None)
    console.print(config_tree(cfg))
    text = console.file.getvalue()
    order = [text.index(f"── {group}") for group in ("data", "model", "optimizer", "trainer", "callbacks")]
    assert order == sorted(order)  # the groups first, in this order
    assert "seed: 7" in text  # data.seed: ${seed}, resolved
    assert "── task_name" in text and "demo" in text


class _Loader(list):
    pass


class _Plan:
    labels = None

    def set_pseudo_labels(self, labels) -> None:
        self.labels = labels


class _Module:
    def __init__(self) -> None:
        self.training_plan = _Plan()

    def extract_features(self, loader):
        feats, ids = [], []
        for batch in loader:  # iterating drives the progress bar
            feats.append(batch["x"])
            ids.append(batch["index"])
        return torch.cat(feats), torch.cat(ids)

    def all_gather(self, x):
        return x

    def reset_head(self) -> None:
        pass


class _DataModule:
    def __init__(self, loader) -> None:
        self.loader = loader

    def feature_dataloader(self, world_size: int, rank: int):
        return self.loader


class _Strategy:
    @staticmethod
    def broadcast(x, src: int = 0):
        return x


class _Trainer:
    world_size, global_rank, is_global_zero, global_step, loggers, callbacks = 1, 0, True, 0, [], []
    strategy = _Strategy()

    def __init__(self, datamodule) -> None:
        self.datamodule = datamodule


def test_reassignment_shows_progress_bars_for_features_and_kmeans(capsys) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    batches = _Loader({"x": torch.tensor(centres[i % 3] + rng.normal(size=(4, 8)), dtype=torch.float32),
                       "index": torch.arange(4 * i, 4 * i + 4)} for i in range(6))
    trainer = _Trainer(_DataModule(batches))
    module = _Module()
    PseudoLabelReassigner(num_clusters=3, pca_dim=None, nredo=1).reassign(trainer, module)
    err = capsys.readouterr().err
    assert "features:" in err and "/6 " in err  # a bar over the 6 feature batches
    assert "k-means (faiss, K=3, N=24)" in err
    assert sorted(np.bincount(module.training_plan.labels.numpy()).tolist()) == [8, 8, 8]
    PseudoLabelReassigner(num_clusters=3, pca_dim=None, nredo=1, progress=False).reassign(trainer, _Module())
    assert capsys.readouterr().err == ""
