"""The clustering method: backbone loading, views, k-means reassignment inside fit, test metrics, end to end."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger

from callbacks import PseudoLabelReassigner
from clustering.alignment import align_to
from clustering.descriptors import TEXTURE_DESCRIPTORS
from clustering.stability import pick_weight
from datamodules import NEUDataModule
from datamodules.synthetic import write_neu_cls
from datamodules.views import MultiCropViews
from lightning_modules.cluster import ClusteringModule, backbone_from_config, create_backbone
from lightning_modules.cluster.plan import PseudoLabelViews
from metrics.clustering import clustering_summary
from tests.conftest import PROJECT_ROOT
from tests.helpers import compose_cfg, load_benchmark


@pytest.fixture(scope="module")
def neu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_neu_cls(tmp_path_factory.mktemp("neu") / "NEU-CLS", per_class=6, size=(32, 32), seed=3)


def neu_dm(root: Path, **kwargs) -> NEUDataModule:
    return NEUDataModule(root=root, image_size=(32, 32), eval_batch_size=16, **kwargs)


def views_plan() -> PseudoLabelViews:
    """8 images x 2 + 2 views of 32 px (ConvNeXt needs >= 32 px), made in the loader."""
    return PseudoLabelViews(MultiCropViews(global_size=32, local_size=32, n_global=2, n_local=2), batch_size=8)


def test_views_have_the_configured_sizes() -> None:
    views = MultiCropViews(global_size=24, local_size=12, n_global=2, n_local=6)(torch.rand(1, 40, 40))
    assert [tuple(v.shape) for v in views] == [(1, 24, 24)] * 2 + [(1, 12, 12)] * 6


def test_backbone_from_a_local_checkpoint_adapts_rgb_weights_to_grayscale(tmp_path: Path) -> None:
    rgb = timm.create_model("convnextv2_atto", pretrained=False, num_classes=10, in_chans=3)
    path = tmp_path / "atto.pth"
    torch.save(rgb.state_dict(), path)
    gray = create_backbone("convnextv2_atto", in_chans=1, checkpoint_path=str(path))
    stem = gray.stem[0].weight
    assert stem.shape[1] == 1
    assert torch.allclose(stem[:, 0], rgb.stem[0].weight.sum(dim=1), atol=1e-5)
    assert torch.equal(gray.stages[0].blocks[0].conv_dw.weight, rgb.stages[0].blocks[0].conv_dw.weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_backbone("convnextv2_atto", checkpoint_path=str(tmp_path / "missing.pth"))


def test_backbone_config_node_and_plain_name(tmp_path: Path) -> None:
    """model.backbone.checkpoint_path=<file> loads those weights; model.backbone=<name> (a plain string) still
    works; an unknown key in the node is named."""
    rgb = timm.create_model("convnextv2_atto", pretrained=False, num_classes=10, in_chans=3)
    path = tmp_path / "atto.pth"
    torch.save(rgb.state_dict(), path)
    cfg = compose_cfg(["experiment=cluster_neu_cpu", "model.num_clusters=6", "model.backbone.name=convnextv2_atto",
                       f"model.backbone.checkpoint_path={path}"])
    model = instantiate(cfg.model, optimizer=None, _convert_="all")
    assert model.hparams.backbone == {"name": "convnextv2_atto", "checkpoint_path": str(path), "drop_path_rate": 0.0}
    assert torch.equal(model.backbone.stages[0].blocks[0].conv_dw.weight, rgb.stages[0].blocks[0].conv_dw.weight)
    plain_cfg = compose_cfg(["experiment=cluster_neu_cpu", "model.num_clusters=6", "model.backbone=resnet18"])
    plain = instantiate(plain_cfg.model, optimizer=None)
    assert type(plain.backbone).__name__ == "ResNet"
    with pytest.raises(ValueError, match="unknown: pretrained"):
        backbone_from_config({"name": "convnextv2_atto", "pretrained": True})


def test_fit_reassigns_pseudo_labels_every_k_steps_and_tests(neu_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ClusteringModule(partial(torch.optim.AdamW, lr=1e-3), backbone="convnextv2_atto", num_clusters=6,
                             num_classes=6, warmup_steps=2, max_steps=7, training_plan=views_plan())
    kmeans = PseudoLabelReassigner(num_clusters=6, every_n_steps=3, pca_dim=8, nredo=1)
    dm = neu_dm(neu_root)
    heads: list[torch.Tensor] = []
    reset = model.reset_head

    def spy() -> None:
        reset()
        heads.append(model.head.weight.detach().clone())

    model.reset_head = spy  # type: ignore[method-assign]
    csv_logger = CSVLogger(tmp_path, name="csv")
    trainer = L.Trainer(accelerator="cpu", max_steps=7, max_epochs=-1, logger=csv_logger, callbacks=[kmeans],
                        default_root_dir=str(tmp_path), enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    assert [h["step"] for h in kmeans.history] == [0, 3]  # not at 6: within every_n_steps // 2 of the end (7)
    csv_logger.save()
    with open(Path(csv_logger.log_dir) / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("cluster/size_rank0")]
    ranked = [sorted(h["sizes"], reverse=True) for h in kmeans.history]
    assert [(int(r["step"]), float(r["cluster/size_rank0"]), float(r["cluster/size_rank5"])) for r in rows] == [
        (h["step"], float(sizes[0]), float(sizes[5])) for h, sizes in zip(kmeans.history, ranked, strict=True)]
    assert all(sum(h["sizes"]) == len(dm.train_set) and min(h["sizes"]) > 0 for h in kmeans.history)
    assert "nmi_to_previous" in kmeans.history[1]
    # the diagnostic against the true classes scores the assignment that was set, not the loss's input
    last = clustering_summary(kmeans.previous, dm.train_set.targets, 6, 6)
    assert kmeans.history[-1]["acc_to_truth"] == pytest.approx(last["acc"])
    assert kmeans.history[-1]["nmi_to_truth"] == pytest.approx(last["nmi"])
    assert torch.equal(model.training_plan.pseudo_labels, kmeans.previous)
    assert len(heads) == 2 and not torch.equal(heads[0], heads[1])
    trainer.test(model, datamodule=dm, verbose=False)
    metrics = model.fold_result["metrics"]
    assert metrics["n_images"] == len(dm.test_samples) == 12
    assert 0.0 <= metrics["acc"] <= 1.0 and 0.0 <= metrics["nmi"] <= 1.0 and metrics["ms_per_image"] > 0


def test_validation_scores_the_heads_clusters_on_held_out_training_images(neu_root: Path, tmp_path: Path) -> None:
    """With ``val_fraction`` the held-out images are never clustered or trained on; the last validation's ACC and
    NMI (what settings are chosen on) are those of the final head on them, and go into the fold's metrics."""
    torch.manual_seed(0)
    model = ClusteringModule(partial(torch.optim.AdamW, lr=1e-3), backbone="convnextv2_atto", num_clusters=6,
                             num_classes=6, warmup_steps=2, max_steps=6, training_plan=views_plan())
    kmeans = PseudoLabelReassigner(num_clusters=6, every_n_steps=3, pca_dim=8, nredo=1)
    dm = neu_dm(neu_root, val_fraction=0.25)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, max_epochs=-1, logger=False, callbacks=[kmeans],
                        default_root_dir=str(tmp_path), enable_progress_bar=False, enable_checkpointing=False,
                        val_check_interval=6, check_val_every_n_epoch=None)
    trainer.fit(model, datamodule=dm)
    held_out = {s.name for s in dm.val_samples}
    assert held_out and not held_out & {s.name for s in dm.train_samples}
    assert all(sum(h["sizes"]) == len(dm.train_set) for h in kmeans.history)
    model.eval()
    with torch.no_grad():
        clusters, targets = zip(*((model.classify(b["image"]).argmax(1), b["target"]) for b in dm.val_dataloader()),
                                strict=True)
    expected = clustering_summary(torch.cat(clusters), torch.cat(targets), 6, 6)
    assert model.last_validation == pytest.approx({"val_acc": expected["acc"], "val_nmi": expected["nmi"],
                                                   "val_step": 6})
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.fold_result["metrics"]["val_acc"] == pytest.approx(expected["acc"])


def test_aligned_reassignments_keep_the_head_and_bf16_channels_last_features_are_float32(neu_root: Path) -> None:
    """align_to_previous: the head is reset once (before the first assignment), later assignments keep it and
    are renamed after the previous one; bf16-mixed extracts float32 features from a channels-last backbone."""
    torch.manual_seed(0)
    model = ClusteringModule(partial(torch.optim.AdamW, lr=1e-3), backbone="resnet18", num_clusters=3,
                             num_classes=6, warmup_steps=2, max_steps=7, channels_last=True,
                             training_plan=views_plan())
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    kmeans = PseudoLabelReassigner(num_clusters=3, every_n_steps=2, pca_dim=8, nredo=1, align_to_previous=True)
    resets: list[int] = []
    reset = model.reset_head

    def spy() -> None:
        reset()
        resets.append(model.trainer.global_step)

    model.reset_head = spy  # type: ignore[method-assign]
    assignments: list[torch.Tensor] = []
    dm = neu_dm(neu_root)
    set_labels = model.training_plan.set_pseudo_labels
    model.training_plan.set_pseudo_labels = (  # type: ignore[method-assign]
        lambda labels: (assignments.append(labels.clone()), set_labels(labels)))
    trainer = L.Trainer(accelerator="cpu", max_steps=7, max_epochs=-1, logger=False, callbacks=[kmeans],
                        precision="bf16-mixed", enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    assert [h["step"] for h in kmeans.history] == [0, 2, 4] and resets == [0]
    for before, after in itertools.pairwise(assignments):
        assert torch.equal(align_to(after, before, 3), after)  # already the best renaming
    dtypes: list[torch.dtype] = []
    hook = model.backbone.conv1.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    features, ids = model.extract_features(dm.feature_dataloader())
    hook.remove()
    assert set(dtypes) == {torch.bfloat16}  # under the trainer's bf16 autocast
    assert features.dtype == torch.float32 and features.shape == (len(dm.train_set), model.backbone.num_features)
    plain = ClusteringModule(None, backbone="resnet18", num_clusters=3, channels_last=False)  # type: ignore[arg-type]
    plain.load_state_dict(model.state_dict())
    images = next(iter(dm.feature_dataloader()))["image"]
    model.eval()
    plain.eval()
    assert torch.allclose(model.features(images), plain.features(images), atol=1e-5)  # same numbers


def test_auto_descriptor_weight_is_chosen_at_every_reassignment_and_reported(neu_root: Path) -> None:
    """descriptor_weight=auto: each reassignment records the weight chosen among the candidates and every
    candidate's self-agreement and their mean over the run so far, the choice's basis; the fold's test metrics
    carry the last and the mean chosen weight."""
    torch.manual_seed(0)
    model = ClusteringModule(partial(torch.optim.AdamW, lr=1e-3), backbone="resnet18", num_clusters=3,
                             num_classes=6, warmup_steps=1, max_steps=5, training_plan=views_plan())
    kmeans = PseudoLabelReassigner(num_clusters=3, every_n_steps=2, pca_dim=8, nredo=1, descriptor="lbp_moments",
                                   descriptor_weight="auto", descriptor_weights=[0, 2], agreement_decay=0.7)
    trainer = L.Trainer(accelerator="cpu", max_steps=5, max_epochs=-1, logger=False, callbacks=[kmeans],
                        enable_progress_bar=False, enable_checkpointing=False)
    dm = neu_dm(neu_root)
    trainer.fit(model, datamodule=dm)
    assert [h["step"] for h in kmeans.history] == [0, 2]
    chosen = [h["descriptor_weight"] for h in kmeans.history]
    assert all(w in (0.0, 2.0) for w in chosen) and all(set(h["agreement"]) == {"0.0", "2.0"} for h in kmeans.history)
    # the second choice rests on each weight's agreement averaged over both reassignments, the first counting 0.7
    first, second = kmeans.history
    for w in ("0.0", "2.0"):
        expected = (0.7 * first["agreement"][w] + second["agreement"][w]) / 1.7
        assert second["mean_agreement"][w] == pytest.approx(expected)
    assert chosen[1] == pick_weight({float(w): s for w, s in second["mean_agreement"].items()})
    trainer.test(model, datamodule=dm)
    assert model.fold_result["metrics"]["descriptor_weight_last"] == chosen[-1]
    assert model.fold_result["metrics"]["descriptor_weight_mean"] == pytest.approx(np.mean(chosen))
    with pytest.raises(ValueError, match="a number or 'auto'"):
        PseudoLabelReassigner(num_clusters=3, descriptor="lbp_moments", descriptor_weight="heavy")
    with pytest.raises(ValueError, match="agreement_decay"):
        PseudoLabelReassigner(num_clusters=3, descriptor="lbp_moments", agreement_decay=1.5)


def test_the_descriptor_of_each_training_image_is_clustered_beside_its_features(
        neu_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """descriptor=lbp_moments: k-means receives, row for row with the features, the descriptor of each training
    image as the feature pass saw it (the evaluation transform), and the weight; the images are described at the
    first reassignment only, later ones reuse the same descriptors; without it, no descriptors."""
    import callbacks.pseudo_labels as reassigner_module

    calls: list[dict] = []
    real = reassigner_module.cluster

    def spy(features, k, backend, **kwargs):  # noqa: ANN001, ANN202 - clustering.backends.cluster's arguments
        calls.append({"features": features, **kwargs})
        return real(features, k, backend, **kwargs)

    monkeypatch.setattr(reassigner_module, "cluster", spy)
    described_images: list[int] = []
    for descriptor in ("lbp_moments", None):
        torch.manual_seed(0)
        model = ClusteringModule(partial(torch.optim.AdamW, lr=1e-3), backbone="resnet18", num_clusters=3,
                                 num_classes=6, warmup_steps=1, max_steps=5, training_plan=views_plan())
        kmeans = PseudoLabelReassigner(num_clusters=3, every_n_steps=2, pca_dim=8, nredo=1, descriptor=descriptor,
                             descriptor_weight=2.5)
        if kmeans.descriptor is not None:
            kmeans.descriptor = lambda images, describe=kmeans.descriptor: (
                described_images.append(len(images)), describe(images))[1]
        dm = neu_dm(neu_root)
        trainer = L.Trainer(accelerator="cpu", max_steps=5, max_epochs=-1, logger=False, callbacks=[kmeans],
                            enable_progress_bar=False, enable_checkpointing=False)
        trainer.fit(model, datamodule=dm)
        assert [h["step"] for h in kmeans.history] == [0, 2]
    first, second, *without = calls
    images = torch.stack([dm.train_set[i]["image"] for i in range(len(dm.train_set))])
    assert sum(described_images) == len(images)  # once each, at the first reassignment
    assert first["descriptor_weight"] == 2.5 and first["features"].shape[0] == len(images)
    assert np.allclose(first["descriptors"], TEXTURE_DESCRIPTORS["lbp_moments"](images).numpy(), atol=1e-6)
    assert np.array_equal(second["descriptors"], first["descriptors"])
    assert len(without) == 2 and all("descriptors" not in c and "descriptor_weight" not in c for c in without)


def test_cluster_experiment_end_to_end(neu_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        "experiment=cluster_neu_cpu", f"data.root={neu_root}", "data.archive=null", "data.image_size=[32,32]",
        "model.training_plan.views.global_size=32", "model.training_plan.views.local_size=32",
        "model.training_plan.views.n_local=2", "model.training_plan.batch_size=8",
        "model.max_steps=4", "model.warmup_steps=1", "callbacks.pseudo_labels.every_n_steps=2",
        "callbacks.pseudo_labels.pca_dim=8", f"hydra.run.dir={run_dir}",
    ]
    out = subprocess.run([sys.executable, "train.py", *overrides], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env={**os.environ, "WANDB_MODE": "offline"}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert [f["fold"] for f in report["folds"]] == [0, 1, 2]
    assert {"acc", "nmi", "confusion"} <= set(report["pooled"])
    assert report["pooled"]["n_images"] == 36 and report["method"] == "cluster"
    assert (run_dir / "fold0" / "predictions.csv").read_text().startswith("name,target,cluster")
    # benchmarks/eval_scale.py re-tests the saved fold models: at the preset's eval_scale it gives the run's figures
    retest = load_benchmark("eval_scale").retest
    scales = retest(run_dir, [0.8, 1.0])
    assert scales["0.8"]["pooled"]["acc"] == pytest.approx(report["pooled"]["acc"])
    assert [f["acc"] for f in scales["0.8"]["folds"]] == pytest.approx([f["acc"] for f in report["folds"]])
    assert scales["1.0"]["pooled"]["n_images"] == 36 and 0.0 <= scales["1.0"]["pooled"]["acc"] <= 1.0


def test_whole_images_are_classified_at_eval_scale_in_testing_and_prediction() -> None:
    """``eval_scale`` resizes whole images before the head (testing, predict.py); training views are untouched."""
    torch.manual_seed(0)
    model = ClusteringModule(None, backbone="resnet18", num_clusters=3, num_classes=3,  # type: ignore[arg-type]
                             eval_scale=0.5).eval()
    sizes: list[tuple[int, ...]] = []
    model.backbone.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[-2:])))
    images = torch.rand(4, 1, 64, 48)
    with torch.no_grad():
        logits = model.classify(images)
        expected = model(F.interpolate(images, size=(32, 24), mode="bilinear", antialias=True))
        assert torch.allclose(logits, expected) and sizes == [(32, 24), (32, 24)]
        model.on_test_epoch_start()
        model.test_step({"image": images, "target": torch.tensor([0, 1, 2, 0]), "index": torch.arange(4)}, 0, 1)
        assert sizes[-1] == (32, 24)
        probability = model.predict_images(images)["probability"]
        assert torch.allclose(probability, logits.softmax(1).max(1).values) and sizes[-1] == (32, 24)
        model.hparams.eval_scale = 1.0
        assert torch.equal(model.classify(images), model(images)) and sizes[-1] == (64, 48)
    with pytest.raises(ValueError, match="eval_scale must be > 0"):
        ClusteringModule(None, backbone="resnet18", eval_scale=0.0)  # type: ignore[arg-type]
