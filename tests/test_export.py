"""export.py: the weak model to ONNX (dynamic batch/height/width) and TorchScript, run with onnxruntime and
torch.jit.load and compared with PyTorch, also at sizes other than the export size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import export
from lightning_modules.checkpoints import load_trained_model
from lightning_modules.exporters import EXPORTERS
from lightning_modules.weak import WeakDefectNet
from lightning_modules.weak.export import OUTPUT_NAMES, min_dynamic_side
from tests.inference_helpers import WEAK_SIZE, cluster_checkpoint, weak_checkpoint
from workflow.errors import SettingError

onnx = pytest.importorskip("onnx", reason="export needs onnx, onnxruntime and onnxscript")
ort = pytest.importorskip("onnxruntime", reason="export needs onnx, onnxruntime and onnxscript")
pytest.importorskip("onnxscript", reason="export needs onnx, onnxruntime and onnxscript")

ATOL = 1e-4


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return weak_checkpoint(tmp_path_factory.getbasetemp())


def export_cfg(ckpt: Path, out: Path, **options) -> DictConfig:
    base = {"ckpt_path": str(ckpt), "format": ["onnx", "torchscript"], "image_size": None,
            "batch_size": 1, "dynamic": True, "opset": None, "atol": ATOL, "seed": 0, "output_dir": str(out)}
    return OmegaConf.create({**base, **options})


def reference(net: WeakDefectNet, x: torch.Tensor) -> list[np.ndarray]:
    """heatmap, probability, logit of the PyTorch network."""
    with torch.no_grad():
        heatmap, logit = net(x)
    return [heatmap.numpy(), torch.sigmoid(logit).numpy(), logit.numpy()]


def assert_close(expected: list[np.ndarray], got: list[np.ndarray]) -> None:
    for name, e, g in zip(OUTPUT_NAMES, expected, got, strict=True):
        assert g.shape == e.shape, name
        assert float(np.abs(e - g).max()) < ATOL, name


def test_min_dynamic_side_of_the_paper_net_is_64() -> None:
    """LNet's 15x15 mirror padding (7) needs maps of 8 at 1/8 of the input; DNet's 3 poolings need 8 too."""
    assert min_dynamic_side(WeakDefectNet(lnet_wide=8)) == 64


def test_onnx_and_torchscript_match_pytorch_at_the_export_size_and_others(weak_run: Path, tmp_path: Path) -> None:
    info = export.run(export_cfg(weak_run, tmp_path))
    assert info["dynamic"] and info["input"]["example_size"] == list(WEAK_SIZE)
    assert info["outputs"] == list(OUTPUT_NAMES)
    assert json.loads((tmp_path / "export_info.json").read_text()) == json.loads(json.dumps(info))
    for fmt in ("onnx", "torchscript"):  # export's own check: the example and a batch of 2 at another size
        checks = info["files"][fmt]["checks"]
        assert [c["input_shape"] for c in checks] == [[1, 1, 64, 64], [2, 1, 88, 104]]
        assert 0.0 <= info["files"][fmt]["max_abs_diff"] < ATOL

    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert graph.input[0].name == "image" and [o.name for o in graph.output] == list(OUTPUT_NAMES)
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True] and dims[1].dim_value == 1

    x = torch.rand(3, 1, 80, 136, generator=torch.Generator().manual_seed(1))  # neither the export nor check size
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})
    assert got[0].shape == (3, 1, 10, 17)
    net = load_trained_model(weak_run).module.net
    assert_close(reference(net, x), got)

    scripted = torch.jit.load(str(tmp_path / "model.torchscript.pt"))  # scripted: its branches stay branches
    small = torch.rand(2, 1, 40, 24, generator=torch.Generator().manual_seed(2))  # below 64: edge replication
    with torch.no_grad():
        assert_close(reference(net, small), [t.numpy() for t in scripted(small)])


def test_a_size_below_the_dynamic_minimum_exports_a_fixed_shape(weak_run: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Below 64 px the traced branches (edge replication) would not hold at other sizes: no dynamic axes. The
    exporter is a spy here (the real ONNX export of a fixed shape is the same call without dynamic_shapes)."""
    seen: dict = {}

    def spy(module, example, path, spec):
        seen.update(shape=tuple(example.shape), min_side=spec.min_side)
        return lambda x: [t.detach().numpy() for t in module(x)]

    monkeypatch.setitem(EXPORTERS, "onnx", spy)
    info = export.run(export_cfg(weak_run, tmp_path, format="onnx", image_size=[48, 40], batch_size=2))
    assert seen == {"shape": (2, 1, 48, 40), "min_side": None}
    assert not info["dynamic"] and info["input"]["shape"] == [2, 1, 48, 40]
    assert [c["input_shape"] for c in info["files"]["onnx"]["checks"]] == [[2, 1, 48, 40]]


def test_an_export_that_differs_from_pytorch_fails(weak_run: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def off_by_a_bit(module, example, path, spec):
        def run(x: torch.Tensor) -> list[np.ndarray]:
            with torch.no_grad():
                return [t.numpy() + 1e-3 for t in module(x)]
        return run

    monkeypatch.setitem(EXPORTERS, "torchscript", off_by_a_bit)
    with pytest.raises(export.ExportMismatch, match="torchscript"):
        export.run(export_cfg(weak_run, tmp_path, format="torchscript", dynamic=False))
    recorded = json.loads((tmp_path / "export_info.json").read_text())["files"]["torchscript"]["max_abs_diff"]
    assert recorded == pytest.approx(1e-3, rel=1e-2)
    with pytest.raises(ValueError, match="format"):
        export.formats_of(["onnx", "tflite"])


def test_a_method_that_does_not_export_is_refused_by_name(tmp_path: Path) -> None:
    """What exports is the method's to say (its contract), not a list of classes in export.py."""
    ckpt = cluster_checkpoint(tmp_path / "cluster.ckpt")
    with pytest.raises(SettingError, match=r"a 'cluster' model, which does not export; exportable methods: .*'weak'"):
        export.run(export_cfg(ckpt, tmp_path / "out"))
    assert not list((tmp_path / "out").glob("model*"))
