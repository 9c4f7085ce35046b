"""Tiny trained checkpoints for the predict and export tests, written the way ``train.py`` writes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from callbacks import StageCheckpoint
from callbacks.config_in_checkpoint import ConfigInCheckpoint
from datamodules.synthetic import write_kolektor_like
from lightning_modules.method import build_method
from tests.conftest import PROJECT_ROOT

#: the weak model's training size in these tests (H, W): at the ONNX dynamic minimum (64) of the paper's net
WEAK_SIZE = (64, 64)
CLUSTER_SIZE = (32, 32)
NUM_CLUSTERS = 3


def tiny_trainer(run_dir: Path, max_steps: int, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=max_steps, max_epochs=-1, logger=False, callbacks=callbacks,
                     default_root_dir=str(run_dir), enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, gradient_clip_val=1.0)


def save_with_lightning(model: L.LightningModule, path: Path) -> Path:
    """``trainer.save_checkpoint`` of ``model``: what Lightning itself writes (hyper-parameters, hooks)."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def tiny_kolektor(run_dir: Path) -> Path:
    """12 generated parts in the KolektorSDD layout at :data:`WEAK_SIZE`, under ``run_dir/data/ksdd``."""
    return write_kolektor_like(run_dir / "data" / "ksdd", num_folders=6, parts_per_folder=2, size=WEAK_SIZE, seed=4)


def compose_run(run_dir: Path, data_root: Path, overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, writing under ``run_dir``, reading ``data_root`` at
    :data:`WEAK_SIZE`, without a logger."""
    common = ["logger=none", f"paths.root_dir={run_dir}", f"paths.output_dir={run_dir}", f"data.root={data_root}",
              f"data.image_size=[{WEAK_SIZE[0]},{WEAK_SIZE[1]}]"]
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, *common])


def fit_fold0(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """Fold 0 of ``cfg`` trained as train.py builds it (seed 0), in ``run_dir/fold0``; the trainer after ``fit``."""
    L.seed_everything(0)
    datamodule = instantiate(cfg.data, fold=0)
    model = build_method(cfg.model, cfg.optimizer)
    trainer = tiny_trainer(run_dir / "fold0", model.max_steps, [*callbacks, ConfigInCheckpoint(cfg)])
    trainer.fit(model, datamodule=datamodule)
    return trainer


def weak_config(run_dir: Path, data_root: Path) -> DictConfig:
    """``experiment=demo debug=fast`` composed from ``conf/``, shrunk: 64x64 images, 1 step a stage."""
    return compose_run(run_dir, data_root, ["experiment=demo", "debug=fast", "model.net.lnet_wide=8",
                                            "model.stages.0.iterations=1", "model.stages.1.iterations=1",
                                            "model.stages.2.iterations=1"])


def train_weak(run_dir: Path) -> tuple[Path, DictConfig]:
    """A 3-step weak run (fold 0): ``<run_dir>/fold0/checkpoints/stage3-joint.ckpt`` with the config inside."""
    cfg = weak_config(run_dir, tiny_kolektor(run_dir))
    checkpoints = run_dir / "fold0" / "checkpoints"
    fit_fold0(cfg, run_dir, [StageCheckpoint(dirpath=str(checkpoints))])
    return checkpoints / "stage3-joint.ckpt", cfg


def train_baseline(run_dir: Path, steps: int = 2) -> Path:
    """A ``steps``-step baseline run (fold 0) on the same kind of data: ``<run_dir>/fold0/checkpoints/last.ckpt``
    with the config inside, as train.py writes it."""
    cfg = compose_run(run_dir, tiny_kolektor(run_dir),
                      ["experiment=baseline_kolektor_cpu", f"model.max_steps={steps}", "model.warmup_steps=1",
                       "data.num_workers=0", "data.official_split=false"])
    trainer = fit_fold0(cfg, run_dir, [])
    path = run_dir / "fold0" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


def weak_checkpoint(basetemp: Path) -> Path:
    """:func:`train_weak` once per test session (under pytest's base temp folder), shared by the test files."""
    run_dir = basetemp / "weak_run"
    ckpt = run_dir / "fold0" / "checkpoints" / "stage3-joint.ckpt"
    if not ckpt.is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        train_weak(run_dir)
    return ckpt


def cluster_checkpoint(path: Path, pretrained: Path | None = None) -> Path:
    """A clustering checkpoint (ConvNeXt V2 atto, untrained) saved by Lightning, with the config
    :class:`ConfigInCheckpoint` stores, here from a plain mapping. The backbone starts from ``pretrained`` (a
    timm weights file) when given."""
    config = {
        "model": {"_target_": "lightning_modules.cluster.ClusteringModule",
                  "backbone": {"name": "convnextv2_atto", "checkpoint_path": str(pretrained) if pretrained else None},
                  "num_clusters": NUM_CLUSTERS, "num_classes": 6, "in_chans": 1},
        "data": {"image_size": list(CLUSTER_SIZE)},
    }
    torch.manual_seed(0)
    model = build_method(config["model"], {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_with_lightning(model, path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    ConfigInCheckpoint(config).on_save_checkpoint(None, model, checkpoint)
    torch.save(checkpoint, path)
    return path


def write_mixed_images(folder: Path) -> list[str]:
    """Images of mixed sizes, modes and suffixes (one in a subfolder, upper-case suffix) and a non-image
    file; returns the image names relative to ``folder`` in sorted order."""
    rng = np.random.default_rng(7)
    files = {
        "a_gray.png": rng.integers(0, 256, (72, 40), dtype=np.uint8),
        "b_rgb.jpg": rng.integers(0, 256, (48, 60, 3), dtype=np.uint8),
        "sub/c_big.BMP": rng.integers(0, 256, (104, 56), dtype=np.uint8),
        "sub/d.tiff": rng.integers(0, 256, (64, 64), dtype=np.uint8),
    }
    for name, pixels in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return sorted(files)
