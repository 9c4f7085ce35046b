"""predict.py: checkpoints rebuilt by load_from_checkpoint, images decoded as in training, CSV rows equal to a
direct forward pass, heat-map overlays, cluster ids, the threshold from the run folder, and the Hydra CLI in a
subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import predict
from callbacks.config_in_checkpoint import CONFIG_KEY, ConfigInCheckpoint
from datamodules.errors import DatasetError
from datamodules.image_files import list_images, load_image
from datamodules.samples import Sample, decode_sample
from lightning_modules.checkpoints import load_trained_model
from lightning_modules.cluster import ClusteringModule
from lightning_modules.method import METHOD_KEY
from lightning_modules.weak import WeakDetectionModule
from tests.conftest import PROJECT_ROOT
from tests.inference_helpers import (
    CLUSTER_SIZE,
    NUM_CLUSTERS,
    WEAK_SIZE,
    cluster_checkpoint,
    weak_checkpoint,
    weak_config,
    write_mixed_images,
)


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return weak_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("images")
    return folder, write_mixed_images(folder)


def predict_cfg(ckpt: Path, source: Path, out: Path, **options) -> DictConfig:
    base = {"ckpt_path": str(ckpt), "input": str(source), "resize": "trained", "batch_size": 3,
            "device": "cpu", "threshold": "auto", "overlays": True, "output_dir": str(out)}
    return OmegaConf.create({**base, **options})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_images_are_listed_recursively_and_decoded_exactly_as_in_training(images: tuple[Path, list[str]]) -> None:
    folder, names = images
    root, files = list_images(folder)
    assert root == folder and [f.relative_to(folder).as_posix() for f in files] == names  # .txt left out
    assert list_images(folder / "sub" / "d.tiff") == (folder / "sub", [folder / "sub" / "d.tiff"])
    for name in names:  # the same pixels as the training datamodules (decode_sample, then / 255)
        expected, _ = decode_sample(Sample(name=name, image=folder / name, label=0, group=name), WEAK_SIZE)
        _, tensor = load_image(folder / name, "L", WEAK_SIZE)
        assert torch.equal(tensor, expected.float() / 255.0)
    original, native = load_image(folder / "b_rgb.jpg", "L", None)
    assert native.shape == (1, 48, 60) and original.size == (60, 48) and original.mode == "L"
    (folder / "empty").mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match="no images"):
        list_images(folder / "empty")


def test_weak_checkpoint_is_rebuilt_from_its_hyperparameters(weak_run: Path) -> None:
    checkpoint = torch.load(weak_run, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["net"]["lnet_wide"] == 8 and checkpoint[METHOD_KEY] == "weak"
    assert checkpoint[CONFIG_KEY]["data"]["image_size"] == list(WEAK_SIZE)
    model = load_trained_model(weak_run)
    assert isinstance(model.module, WeakDetectionModule) and not model.module.training
    assert model.module.hparams.net["lnet_wide"] == 8 and model.module.optimizer_factory is not None
    assert model.image_size == WEAK_SIZE and model.fold == 0
    assert model.color_mode == "L"
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(model.module.state_dict()[key], value), key


def test_checkpoint_config_names_the_fold_it_was_trained_on() -> None:
    """train.py fits every fold from one config: each fold's checkpoints store that fold, not the default."""
    cfg = OmegaConf.create({"model": {"lnet": 8}, "data": {"fold": 0, "size": "${model.lnet}"}})
    checkpoint: dict = {}
    ConfigInCheckpoint(cfg, fold=2).on_save_checkpoint(None, None, checkpoint)
    assert checkpoint[CONFIG_KEY]["data"] == {"fold": 2, "size": 8} and cfg.data.fold == 0
    ConfigInCheckpoint(cfg).on_save_checkpoint(None, None, checkpoint)
    assert checkpoint[CONFIG_KEY]["data"]["fold"] == 0


def test_a_checkpoint_moved_out_of_its_fold_folder_keeps_its_stored_fold(weak_run: Path, tmp_path: Path) -> None:
    """Without a fold<k> folder in the path, the fold comes from the stored data.fold."""
    checkpoint = torch.load(weak_run, map_location="cpu", weights_only=True)
    checkpoint[CONFIG_KEY]["data"]["fold"] = 2
    moved = tmp_path / "shipped" / "model.ckpt"
    moved.parent.mkdir()
    torch.save(checkpoint, moved)
    assert load_trained_model(moved).fold == 2


def test_weak_predictions_equal_a_forward_pass_on_the_training_size(weak_run: Path, images, tmp_path: Path) -> None:
    folder, names = images
    rows = predict.run(predict_cfg(weak_run, folder, tmp_path))
    csv_rows = read_csv(tmp_path / "predictions.csv")
    assert [r["name"] for r in csv_rows] == [r["name"] for r in rows] == names
    assert list(csv_rows[0]) == ["name", "probability"]  # no threshold known: no label column
    module = load_trained_model(weak_run).module
    batch = torch.stack([load_image(folder / n, "L", WEAK_SIZE)[1] for n in names])
    with torch.no_grad():
        _, logits = module.net(batch)
    expected = torch.sigmoid(logits)
    assert [r["probability"] for r in rows] == pytest.approx(expected.tolist(), abs=1e-6)
    assert [float(r["probability"]) for r in csv_rows] == pytest.approx(expected.tolist(), abs=1e-5)
    for name in names:  # [input | overlay] at the file's own size
        width, height = Image.open(folder / name).size
        assert Image.open(tmp_path / "overlays" / f"{name}.png").size == (2 * width + 4, height)
    info = json.loads((tmp_path / "predict_info.json").read_text())
    assert info["model"] == "weak" and info["input_size"] == list(WEAK_SIZE) and info["n_images"] == len(names)


def test_weak_predictions_at_native_size_with_a_threshold(weak_run: Path, images, tmp_path: Path) -> None:
    folder, names = images
    rows = predict.run(predict_cfg(weak_run, folder, tmp_path, resize="native", threshold=0.5, overlays=False))
    module = load_trained_model(weak_run).module
    for row, name in zip(rows, names, strict=True):
        image = load_image(folder / name, "L", None)[1]
        with torch.no_grad():
            heatmap, logit = module.net(image[None])
        assert heatmap.shape[-2:] == (image.shape[-2] // 8, image.shape[-1] // 8)
        assert row["probability"] == pytest.approx(float(torch.sigmoid(logit)), abs=1e-6)
        assert row["label"] == int(row["probability"] >= 0.5)
    assert not (tmp_path / "overlays").exists()
    with pytest.raises(ValueError, match="resize"):
        predict.input_size("huge", WEAK_SIZE)
    assert predict.input_size([10, 20], WEAK_SIZE) == (10, 20)


def test_the_run_folder_above_the_checkpoint_gives_the_folds_threshold(weak_run: Path, images,
                                                                       tmp_path: Path) -> None:
    """A checkpoint in a run folder laid out like train.py's: the label threshold is the fold's fixed_threshold
    in <run>/metrics.json. Without the stored run config the training size is unknown: resize=trained says so."""
    checkpoint = torch.load(weak_run, map_location="cpu", weights_only=True)
    del checkpoint[CONFIG_KEY]
    run = tmp_path / "run"
    ckpt = run / "fold1" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save(checkpoint, ckpt)
    (run / ".hydra").mkdir()
    cfg = weak_config(tmp_path, tmp_path / "data")
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))  # unresolved, as Hydra writes it
    (run / "metrics.json").write_text(json.dumps({"folds": [{"fold": 0, "fixed_threshold": 0.9},
                                                            {"fold": 1, "fixed_threshold": 0.25}]}))
    model = load_trained_model(ckpt)
    assert model.run_dir == run.resolve() and model.fold == 1
    assert model.image_size is None and model.fixed_threshold() == 0.25
    folder, names = images
    with pytest.raises(ValueError, match="no data.image_size: set resize=native or resize"):
        predict.run(predict_cfg(ckpt, folder, tmp_path / "out", overlays=False))
    rows = predict.run(predict_cfg(ckpt, folder, tmp_path / "out", overlays=False, resize=list(WEAK_SIZE)))
    assert [r["label"] for r in rows] == [int(r["probability"] >= 0.25) for r in rows]
    assert json.loads((tmp_path / "out" / "predict_info.json").read_text())["threshold"] == 0.25
    # a run stopped after this fold's test: no metrics.json, the fold's own result file gives the threshold
    (run / "metrics.json").unlink()
    assert model.fixed_threshold() is None
    torch.save({"metrics": {"fixed_threshold": 0.5}}, run / "fold1" / "fold_result.pt")
    assert model.fixed_threshold() == 0.5


def test_cluster_predictions_are_the_argmax_and_max_softmax(images, tmp_path: Path) -> None:
    ckpt = cluster_checkpoint(tmp_path / "cluster.ckpt")
    folder, names = images
    rows = predict.run(predict_cfg(ckpt, folder, tmp_path / "out"))
    module = load_trained_model(ckpt).module
    assert isinstance(module, ClusteringModule)
    batch = torch.stack([load_image(folder / n, "L", CLUSTER_SIZE)[1] for n in names])
    with torch.no_grad():
        probabilities = torch.softmax(module(batch), dim=1)
    assert [r["name"] for r in rows] == names
    assert [r["cluster"] for r in rows] == probabilities.argmax(1).tolist()
    assert all(0 <= r["cluster"] < NUM_CLUSTERS for r in rows)
    assert [r["probability"] for r in rows] == pytest.approx(probabilities.amax(1).tolist(), abs=1e-6)
    assert list(read_csv(tmp_path / "out" / "predictions.csv")[0]) == ["name", "cluster", "probability"]
    assert not (tmp_path / "out" / "overlays").exists()  # heat maps are the weak model's


def test_predict_cli_on_a_single_image(weak_run: Path, images, tmp_path: Path) -> None:
    folder, _ = images
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "predict.py", f"ckpt_path={weak_run}", f"input={folder / 'sub' / 'c_big.BMP'}",
         "resize=native", "threshold=0.5", f"hydra.run.dir={out}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(out / "predictions.csv")
    assert [r["name"] for r in rows] == ["c_big.BMP"] and list(rows[0]) == ["name", "probability", "label"]
    module = load_trained_model(weak_run).module
    with torch.no_grad():
        _, logit = module.net(load_image(folder / "sub" / "c_big.BMP", "L", None)[1][None])
    assert float(rows[0]["probability"]) == pytest.approx(float(torch.sigmoid(logit)), abs=1e-5)
    assert (out / "overlays" / "c_big.BMP.png").is_file() and (out / ".hydra" / "config.yaml").is_file()
