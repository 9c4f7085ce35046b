"""The method contract and checkpoints through Lightning: both methods registered and found through the registry
(also a third one defined here), ``load_from_checkpoint(weights_only=True)`` rebuilding each method with the same
outputs, and files a safe load refuses (random bytes, a crafted pickle) reported by name, their code not run."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import predict
from callbacks.config_in_checkpoint import ConfigInCheckpoint
from datamodules.image_files import load_image
from lightning_modules.checkpoints import CheckpointError, load_method, load_trained_model, read_checkpoint
from lightning_modules.cluster import ClusteringModule
from lightning_modules.method import (
    METHOD_KEY,
    METHODS,
    DefectMethod,
    all_methods,
    build_method,
    method_class,
    method_of,
    register_method,
)
from lightning_modules.weak import WeakDetectionModule
from tests.helpers import compose_cfg
from tests.inference_helpers import (
    CLUSTER_SIZE,
    cluster_checkpoint,
    save_with_lightning,
    weak_checkpoint,
    write_mixed_images,
)

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
WEAK_NET = {"_target_": "lightning_modules.weak.WeakDefectNet", "in_channels": 1, "lnet_wide": 8}


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return weak_checkpoint(tmp_path_factory.getbasetemp())


def test_both_methods_are_registered_with_the_contract() -> None:
    methods = all_methods()
    assert methods["weak"] is WeakDetectionModule and methods["cluster"] is ClusteringModule
    assert method_class("weak") is WeakDetectionModule and method_class("cluster").name == "cluster"
    assert WeakDetectionModule.metric_names[0] == "ap" and ClusteringModule.metric_names[0] == "acc"
    assert (WeakDetectionModule.tests_training_images, ClusteringModule.tests_training_images) == (True, False)
    assert (WeakDetectionModule.exportable, ClusteringModule.exportable) == (True, False)
    assert WeakDetectionModule.prediction_columns == ("probability",)
    assert ClusteringModule.prediction_columns == ("cluster", "probability")
    with pytest.raises(ValueError, match="no method named 'nope'.*'cluster', 'weak'"):
        method_class("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_method("weak")(ClusteringModule)


@pytest.mark.parametrize(("experiment", "name"), [("demo", "weak"), ("weak_kolektor_cpu", "weak"),
                                                  ("cluster_neu_cpu", "cluster"), ("cluster_folder", "cluster")])
def test_train_resolves_the_method_of_a_preset_through_the_registry(experiment: str, name: str) -> None:
    cfg = compose_cfg([f"experiment={experiment}"])
    method = method_of(cfg.model)
    assert method.name == name and METHODS[name] is method
    pooled_by = method.pool  # a classmethod: train.py pools without a model instance
    assert pooled_by.__self__ is method


def test_an_unregistered_model_class_is_refused() -> None:
    with pytest.raises(ValueError, match="torch.nn.Linear.*not a registered method"):
        method_of({"_target_": "torch.nn.Linear"})


def test_weak_round_trip_through_load_from_checkpoint_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_method({"_target_": "lightning_modules.weak.WeakDetectionModule", "net": WEAK_NET,
                          "alpha_init": 4.0, "stages": [{"name": "a", "iterations": 3, "lr": 0.1,
                                                         "lr_drops": {2: 0.01}, "train": ["trunk", "lnet"],
                                                         "losses": ["weak"]}]}, SGD).eval()
    for p in model.parameters():  # not the initial values: the weights must come from the file
        p.data.add_(0.01 * torch.randn_like(p))
    ckpt = save_with_lightning(model, tmp_path / "weak.ckpt")
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert stored[METHOD_KEY] == "weak" and stored["hyper_parameters"]["net"] == WEAK_NET
    assert stored["hyper_parameters"]["optimizer"] == SGD

    loaded = WeakDetectionModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    assert loaded.plan.total == 3 and loaded.hparams.alpha_init == 4.0 and loaded.lr_scale == 1.0
    x = torch.rand(2, 1, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model.predict_images(x), loaded.predict_images(x)
    assert set(got) == {"probability", "heatmap"}
    for key in got:
        assert torch.equal(expected[key], got[key]), key
    assert type(load_method(ckpt)) is WeakDetectionModule


def test_cluster_round_trip_through_load_from_checkpoint_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_method({"_target_": "lightning_modules.cluster.ClusteringModule",
                          "backbone": {"name": "convnextv2_atto", "checkpoint_path": None},
                          "num_clusters": 4, "num_classes": 3, "defect_free_class": 0, "eval_scale": 0.5},
                         SGD).eval()
    ckpt = save_with_lightning(model, tmp_path / "cluster.ckpt")
    loaded = ClusteringModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    assert (loaded.hparams.num_clusters, loaded.hparams.eval_scale, loaded.head.out_features) == (4, 0.5, 4)
    x = torch.rand(3, 1, 96, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model.predict_images(x), loaded.predict_images(x)
    assert torch.equal(expected["cluster"], got["cluster"])
    assert torch.equal(expected["probability"], got["probability"])


def test_a_cluster_checkpoint_rebuilds_without_its_pretrained_backbone_file(tmp_path: Path) -> None:
    """The pretrained file only starts training: the checkpoint's hyper-parameters leave it out."""
    import timm

    pretrained = tmp_path / "atto.pth"
    torch.save(timm.create_model("convnextv2_atto", num_classes=0, in_chans=1).state_dict(), pretrained)
    ckpt = cluster_checkpoint(tmp_path / "cluster.ckpt", pretrained=pretrained)
    pretrained.unlink()
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert stored["hyper_parameters"]["backbone"] == {"name": "convnextv2_atto", "checkpoint_path": None}
    module = load_trained_model(ckpt).module
    assert isinstance(module, ClusteringModule) and not module.training
    for key, value in stored["state_dict"].items():
        assert torch.equal(module.state_dict()[key], value), key


class RunsCode:
    """Pickles as a call of ``os.system``: loading it with full unpickling would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def crafted_files(weak_run: Path, folder: Path, marker: Path) -> dict[str, Path]:
    """A torch checkpoint (zip) and a plain pickle, each with a global that runs code, and one holding a numpy
    value (no code, but not a tensor or plain container either)."""
    checkpoint = torch.load(weak_run, map_location="cpu", weights_only=True)
    files = {"torch_zip": folder / "crafted.ckpt", "plain_pickle": folder / "crafted_plain.ckpt",
             "numpy_value": folder / "numpy.ckpt"}
    torch.save({**checkpoint, "extra": RunsCode(marker)}, files["torch_zip"])
    with open(files["plain_pickle"], "wb") as handle:
        pickle.dump({"state_dict": {}, "extra": RunsCode(marker)}, handle)
    torch.save({**checkpoint, "extra": np.float64(0.5)}, files["numpy_value"])
    return files


@pytest.mark.parametrize("kind", ["torch_zip", "plain_pickle", "numpy_value"])
def test_a_checkpoint_the_safe_load_refuses_is_an_error_naming_it_and_its_code_does_not_run(
        weak_run: Path, tmp_path: Path, kind: str) -> None:
    control = tmp_path / "control_ran"
    pickle.loads(pickle.dumps(RunsCode(control)))  # the payload is real: full unpickling runs it
    assert control.exists()
    marker = tmp_path / "code_ran"
    ckpt = crafted_files(weak_run, tmp_path, marker)[kind]
    images = tmp_path / "images"
    images.mkdir()
    write_mixed_images(images)
    cfg = {"ckpt_path": str(ckpt), "input": str(images), "resize": "trained", "batch_size": 2, "device": "cpu",
           "threshold": "auto", "overlays": False, "output_dir": str(tmp_path / "out")}
    for load in (read_checkpoint, load_method, load_trained_model,
                 lambda p: predict.run(OmegaConf.create(cfg))):
        with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} was refused by the safe loader"):
            load(ckpt)
    assert not marker.exists()
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_random_bytes_are_an_error_naming_the_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "noise.ckpt"
    ckpt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} was refused by the safe loader"):
        load_trained_model(ckpt)
    with pytest.raises(CheckpointError, match="absent.ckpt does not exist"):
        load_trained_model(tmp_path / "absent.ckpt")


def test_a_missing_checkpoint_stops_predict_with_its_message_alone(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """A mistyped ckpt_path: exit status 1 and one line naming the file, no traceback (as a bad setting)."""
    cfg = OmegaConf.create({"ckpt_path": str(tmp_path / "typo.ckpt"), "input": str(tmp_path), "resize": "trained",
                            "batch_size": 1, "device": "cpu", "output_dir": str(tmp_path / "out")})
    with pytest.raises(SystemExit) as exit_info:
        predict.main(cfg)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"checkpoint {tmp_path / 'typo.ckpt'} does not exist" in err and "Traceback" not in err


def test_a_checkpoint_without_its_method_name_is_an_error(weak_run: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(weak_run, map_location="cpu", weights_only=True)
    del checkpoint[METHOD_KEY]
    torch.save(checkpoint, tmp_path / "nameless.ckpt")
    with pytest.raises(CheckpointError, match="nameless.ckpt does not record the method"):
        load_trained_model(tmp_path / "nameless.ckpt")


@pytest.fixture
def probe_method() -> Iterator[type[DefectMethod]]:
    """A third method, defined here and nowhere else in the code: predict.py must find it by its name alone."""

    @register_method("probe_mean")
    class MeanBrightness(DefectMethod):
        prediction_columns = ("brightness", "defective")
        thresholded = False

        def __init__(self, gain: float = 1.0) -> None:
            super().__init__()
            self.save_config_hyperparameters()
            self.conv = nn.Conv2d(1, 1, 1, bias=False)
            nn.init.constant_(self.conv.weight, gain)

        @property
        def max_steps(self) -> int:
            return 1

        @classmethod
        def pool(cls, fold_results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
            return {}

        def predict_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
            brightness = self.conv(images).mean(dim=(1, 2, 3))
            return {"brightness": brightness, "defective": (brightness > 0.5).long()}

    yield MeanBrightness
    del METHODS["probe_mean"]


def test_predict_runs_a_method_known_only_to_the_registry(probe_method: type[DefectMethod], tmp_path: Path) -> None:
    ckpt = save_with_lightning(probe_method(gain=2.0), tmp_path / "probe.ckpt")
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    ConfigInCheckpoint({"data": {"image_size": list(CLUSTER_SIZE)}}).on_save_checkpoint(None, None, checkpoint)
    torch.save(checkpoint, ckpt)
    images = tmp_path / "images"
    images.mkdir()
    names = write_mixed_images(images)
    rows = predict.run(OmegaConf.create({"ckpt_path": str(ckpt), "input": str(images), "resize": "trained",
                                         "batch_size": 2, "device": "cpu", "threshold": "auto", "overlays": True,
                                         "output_dir": str(tmp_path / "out")}))
    assert [list(r) for r in rows] == [["name", "brightness", "defective"]] * len(names)
    for row, name in zip(rows, names, strict=True):
        expected = 2.0 * float(load_image(images / name, "L", CLUSTER_SIZE)[1].mean())
        assert row["brightness"] == pytest.approx(expected, abs=1e-5)
        assert row["defective"] == int(expected > 0.5)
