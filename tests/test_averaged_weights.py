"""The EMA option of the clustering method: k-means on the averaged weights' features (callbacks.ema)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import nn

from callbacks import PseudoLabelReassigner
from callbacks.averaged_weights import averaged_weights, restart_average
from datamodules import NEUDataModule
from datamodules.synthetic import write_neu_cls
from datamodules.views import MultiCropViews
from lightning_modules.cluster import ClusteringModule
from lightning_modules.cluster.plan import PseudoLabelViews
from tests.helpers import compose_cfg
from train import build_callbacks


def test_averaged_weights_are_swapped_in_for_the_block_and_back() -> None:
    """With Lightning's own EMAWeightAveraging (decay 0.5): inside the block the module holds the average of its
    two states, its own weights again after; no callback, or none set up yet, leaves the module alone."""
    module = L.LightningModule()
    module.layer = nn.Linear(2, 1)
    ema = EMAWeightAveraging(decay=0.5)
    trainer = SimpleNamespace(callbacks=[ema])
    with averaged_weights(trainer, module) as swapped:  # not set up: no average yet
        assert swapped is False
    ema.setup(trainer, module, "fit")  # type: ignore[arg-type]
    ema._average_model.update_parameters(module)  # the first update copies the weights
    start = module.layer.weight.detach().clone()
    with torch.no_grad():
        module.layer.weight.add_(2.0)
    ema._average_model.update_parameters(module)
    with averaged_weights(trainer, module) as swapped:
        assert swapped is True
        assert torch.allclose(module.layer.weight, start + 1.0)  # 0.5 * start + 0.5 * (start + 2)
    assert torch.allclose(module.layer.weight, start + 2.0)
    with averaged_weights(SimpleNamespace(callbacks=[]), module) as swapped:
        assert swapped is False and torch.allclose(module.layer.weight, start + 2.0)


@pytest.mark.parametrize(("from_average", "align"), [(True, True), (False, True), (True, False)])
def test_reassignments_cluster_the_averaged_weights_features(tmp_path: Path, from_average: bool, align: bool) -> None:
    """The features come from the average, training goes on from its own weights, and a re-initialised head
    restarts the average's head (with align_to_previous the head is kept, and so is its average)."""
    root = write_neu_cls(tmp_path / "NEU-CLS", per_class=4, size=(32, 32), seed=1)
    views = MultiCropViews(global_size=32, local_size=32, n_global=1, n_local=1)
    dm = NEUDataModule(root=root, image_size=(32, 32), eval_batch_size=16)
    torch.manual_seed(0)
    model = ClusteringModule(partial(torch.optim.AdamW, lr=1e-2), backbone="resnet18", num_clusters=3,
                             num_classes=6, warmup_steps=1, max_steps=5,
                             training_plan=PseudoLabelViews(views, batch_size=8))
    kmeans = PseudoLabelReassigner(num_clusters=3, every_n_steps=2, pca_dim=4, nredo=1, align_to_previous=align,
                         features_from_average=from_average)
    ema = EMAWeightAveraging(decay=0.5)
    trained: dict[int, torch.Tensor] = {}  # the weights being trained, after each step
    resumed: dict[int, torch.Tensor] = {}  # and before each step (keyed by the steps already taken)

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            resumed[trainer.global_step] = pl_module.backbone.conv1.weight.detach().clone()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            trained[trainer.global_step] = pl_module.backbone.conv1.weight.detach().clone()

    seen: list[torch.Tensor] = []  # the module's weights while it extracts the features
    extract = model.extract_features

    def spy(loader):  # noqa: ANN001, ANN202
        seen.append(model.backbone.conv1.weight.detach().clone())
        return extract(loader)

    model.extract_features = spy  # type: ignore[method-assign]
    same_head: list[bool] = []  # the average's head equals the head after each reassignment
    reassign = kmeans.reassign

    def spy_reassign(trainer, pl_module):  # noqa: ANN001, ANN202
        assignment = reassign(trainer, pl_module)
        same_head.append(torch.equal(pl_module.head.weight, ema._average_model.module.head.weight))
        return assignment

    kmeans.reassign = spy_reassign  # type: ignore[method-assign]
    trainer = L.Trainer(accelerator="cpu", max_steps=5, max_epochs=-1, logger=False,
                        callbacks=[Recorder(), kmeans, ema], enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    assert [h["step"] for h in kmeans.history] == [0, 2]
    assert [h["averaged_weights"] for h in kmeans.history] == [from_average] * 2
    # at step 2 (the callbacks run in order: the EMA has not yet taken step 2) the average is the weights after
    # step 1: its first update copies them
    if from_average:
        assert torch.equal(seen[1], trained[1]) and not torch.equal(seen[1], trained[2])
    else:
        assert torch.equal(seen[1], trained[2])
    assert same_head == [True, not align]  # step 0 re-initialises the head either way
    # step 3 started from the weights step 2 left (recorded before the reassignment), not from the average
    assert torch.equal(resumed[2], trained[2])
    # the average is what training leaves in the module: the tested weights are the average
    assert torch.equal(model.backbone.conv1.weight, ema._average_model.module.backbone.conv1.weight)


def test_restart_average_copies_one_part_into_the_average() -> None:
    module = L.LightningModule()
    module.body, module.head = nn.Linear(2, 2), nn.Linear(2, 1)
    ema = EMAWeightAveraging(decay=0.5)
    trainer = SimpleNamespace(callbacks=[ema])
    assert restart_average(trainer, module, "head") is False  # no average yet
    ema.setup(trainer, module, "fit")  # type: ignore[arg-type]
    averaged = ema._average_model.module
    body = averaged.body.weight.detach().clone()
    with torch.no_grad():
        module.body.weight.add_(1.0)
        module.head.weight.add_(1.0)
        module.head.bias.add_(1.0)
    assert restart_average(trainer, module, "head") is True
    assert torch.equal(averaged.head.weight, module.head.weight) and torch.equal(averaged.head.bias, module.head.bias)
    assert torch.equal(averaged.body.weight, body)  # the rest of the average is left alone


def test_ema_config_adds_lightnings_callback(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=cluster_neu_cpu",
                       "callbacks.ema={_target_:lightning.pytorch.callbacks.EMAWeightAveraging,decay:0.97}"])
    callbacks = build_callbacks(cfg, tmp_path)
    assert [c.features_from_average for c in callbacks if isinstance(c, PseudoLabelReassigner)] == [True]
    assert sum(isinstance(c, EMAWeightAveraging) for c in callbacks) == 1
    default = build_callbacks(compose_cfg(["experiment=cluster_neu_cpu"]), tmp_path)
    assert not any(isinstance(c, EMAWeightAveraging) for c in default)  # off unless asked for
