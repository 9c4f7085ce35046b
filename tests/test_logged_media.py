"""Heat-map panels during training, PR curves and clustering pictures: what reaches TensorBoard, CSV and PNG files,
and that rendering panels leaves training alone (weights, batch-norm buffers, train/eval modes, RNG)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from callbacks import ClusteringPlots, HeatmapPanels, PseudoLabelReassigner
from callbacks.heatmap_panels import pick_images
from datamodules import KolektorSDDDataModule
from lightning_modules.weak import WeakDefectNet, WeakDetectionModule
from workflow.media import log_images, log_pr_curve

TINY_STAGES = [
    {"name": "localization", "iterations": 3, "lr": 0.1, "train": ["trunk", "lnet"], "losses": ["weak"],
     "alpha": "collaborative"},
    {"name": "decision", "iterations": 3, "lr": 0.01, "train": ["dnet"], "losses": ["bce"]},
]


def tiny_module() -> WeakDetectionModule:
    return WeakDetectionModule(WeakDefectNet(lnet_wide=8), partial(torch.optim.SGD), stages=TINY_STAGES,
                               alpha_every=2, heatmap_dir=None)


def fake_trainer(root: Path, loggers: list, **extra) -> SimpleNamespace:
    """What the callbacks read from a trainer, without a fit."""
    return SimpleNamespace(loggers=loggers, is_global_zero=True, global_step=extra.pop("global_step", 5),
                           default_root_dir=str(root), callbacks=extra.pop("callbacks", []),
                           datamodule=extra.pop("datamodule", None), **extra)


def dataset(labels: list[int], size: tuple[int, int] = (64, 32)) -> list[dict]:
    return [{"image": torch.rand(1, *size), "mask": torch.zeros(1, *size), "label": torch.tensor(float(v)),
             "name": f"img{i}"} for i, v in enumerate(labels)]


def test_fixed_images_are_defective_first_then_defect_free() -> None:
    chosen = pick_images(dataset([0, 1, 0, 1, 1, 0]), num_images=4)
    assert chosen.names == ["img1", "img3", "img4", "img0"] and chosen.labels == [1, 1, 1, 0]
    assert pick_images(dataset([0, 1, 0, 1, 1, 0]), num_images=3, num_defective=1).names == ["img1", "img0", "img2"]
    assert chosen.images.shape == (4, 1, 64, 32)


def test_panels_leave_weights_batch_norm_modes_and_rng_untouched(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = tiny_module()
    module.net(torch.rand(4, 1, 64, 32))  # training-mode pass: batch-norm running statistics move off their init
    module._apply_stage(["dnet"])  # as in stage 2: trunk and LNet frozen in eval mode, DNet training
    module.net.register_forward_pre_hook(lambda *_: torch.rand(1).sum() and None)  # a forward drawing random numbers
    before = {k: v.clone() for k, v in module.state_dict().items()}
    modes = {name: m.training for name, m in module.named_modules()}
    callback = HeatmapPanels(every_n_steps=2, num_images=3)
    callback.panel_images = pick_images(dataset([0, 1, 1, 0]), 3)
    rng = torch.get_rng_state()
    paths = callback.log_panels(fake_trainer(tmp_path, loggers=[]), module)  # no image logger: PNG files
    assert [p.name for p in paths] == ["step000005-img1.png", "step000005-img2.png", "step000005-img0.png"]
    assert all(p.is_file() and p.parent == tmp_path / "heatmaps_live" for p in paths)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers (num_batches_tracked too)
    assert {name: m.training for name, m in module.named_modules()} == modes
    assert not module.net.trunk.training and module.net.dnet.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.is_grad_enabled() and all(p.grad is None for p in module.parameters())


def test_a_fit_with_panels_trains_exactly_like_one_without(kolektor_root: Path, tmp_path: Path) -> None:
    states = []
    for with_panels in (False, True):
        L.seed_everything(0)
        module = tiny_module()
        datamodule = KolektorSDDDataModule(root=kolektor_root, image_size=(64, 24), official_split=False)
        callbacks = [HeatmapPanels(every_n_steps=2, num_images=2)] if with_panels else []
        trainer = L.Trainer(accelerator="cpu", max_steps=4, max_epochs=-1, logger=False, callbacks=callbacks,
                            default_root_dir=str(tmp_path / str(with_panels)), enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, gradient_clip_val=1.0)
        trainer.fit(module, datamodule=datamodule)
        states.append(module.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    written = sorted(p.name for p in (tmp_path / "True" / "heatmaps_live").glob("*.png"))
    assert [n[:10] for n in written[::2]] == ["step000002", "step000004"]  # every 2 steps (4: the end), 2 images


def test_tensorboard_takes_panels_and_pr_curve_csv_falls_back_to_files(tmp_path: Path) -> None:
    EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator

    tensorboard = TensorBoardLogger(tmp_path / "tb", name=None)
    tensorboard._prefix = "fold1"
    image = np.zeros((8, 12, 3), dtype=np.uint8)
    trainer = fake_trainer(tmp_path, loggers=[tensorboard, CSVLogger(tmp_path, name="csv")])
    assert log_images(trainer, "heatmaps_live", [image, image], ["a", "b/c"], step=3, fallback_dir=tmp_path) == []
    labels, scores = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([0.1, 0.8, 0.4, 0.5, 0.9])
    log_pr_curve(trainer, "test/pr_curve", labels, scores, step=7, fallback_dir=tmp_path)
    tensorboard.experiment.flush()
    events = EventAccumulator(str(Path(tensorboard.log_dir)), size_guidance={"images": 0, "tensors": 0}).Reload()
    assert {"fold1-heatmaps_live/a", "fold1-heatmaps_live/b_c", "fold1-test/pr_curve_plot"} <= set(
        events.Tags()["images"])
    assert "fold1-test/pr_curve" in events.Tags()["tensors"]
    assert not (tmp_path / "heatmaps_live").exists()  # an image logger took them: no files

    csv_only = fake_trainer(tmp_path, loggers=[CSVLogger(tmp_path, name="csv")])
    log_pr_curve(csv_only, "test/pr_curve", labels, scores, step=7, fallback_dir=tmp_path / "fold0")
    assert (tmp_path / "fold0" / "test_pr_curve_plot" / "step000007.png").is_file()


def test_clustering_plots_draw_size_history_and_confusion(tmp_path: Path) -> None:
    kmeans = PseudoLabelReassigner(num_clusters=3, every_n_steps=2)
    csv_logger = CSVLogger(tmp_path, name="csv")
    trainer = fake_trainer(tmp_path, loggers=[csv_logger], callbacks=[kmeans], global_step=4,
                           datamodule=SimpleNamespace(classes=["a", "b", "c"]))
    plots = ClusteringPlots()
    kmeans.history.append({"step": 0, "sizes": [2, 7, 3], "seconds": 0.1})
    kmeans.history.append({"step": 2, "sizes": [4, 4, 4], "seconds": 0.1})
    plots.on_train_end(trainer, None)
    module = SimpleNamespace(fold_result={"metrics": {"confusion": [[3, 1, 0], [0, 4, 0], [1, 0, 3]],
                                                      "mapping": {0: 0, 1: 1, 2: 2}}})
    plots.on_test_end(trainer, module)
    assert (tmp_path / "cluster_size_history" / "step000004.png").is_file()
    assert (tmp_path / "test_confusion" / "step000004.png").is_file()


def test_configs_give_weak_experiments_panels_and_clustering_its_plots() -> None:
    from hydra.utils import instantiate

    from tests.helpers import compose_cfg

    weak = compose_cfg(["experiment=demo", "logger=many"])
    assert set(weak.logger) == {"csv", "tensorboard", "wandb"}
    assert isinstance(instantiate(weak.callbacks.heatmap_panels), HeatmapPanels) and weak.callbacks.pr_curve
    cluster = compose_cfg(["experiment=cluster_neu_cpu", "logger=[csv,wandb]"])
    assert set(cluster.logger) == {"csv", "wandb"} and list(cluster.logger.wandb.tags) == list(cluster.tags)
    assert cluster.callbacks.heatmap_panels is None and cluster.callbacks.pr_curve is None
    assert isinstance(instantiate(cluster.callbacks.clustering_plots), ClusteringPlots)
