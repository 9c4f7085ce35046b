"""predict.py's backends (workflow/inference_backends.py): torch, torchscript and ONNX Runtime give the same outputs;
bf16 (where the CPU runs it natively) stays within a stated tolerance of float32; int8 (ONNX Runtime static
quantisation, workflow/quantization.py) tracks float32 ONNX and is calibrated on the images given to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from lightning_modules.baseline.module import ImageClassifierModule
from lightning_modules.baseline.networks import CamClassifier
from lightning_modules.exporters import ExportTarget
from lightning_modules.weak.export import weak_export_target
from lightning_modules.weak.networks import WeakDefectNet
from workflow.inference_backends import Bf16Net, ExportedNet, export_net, onnx_session_runner, with_backend
from workflow.precision import native_bf16
from workflow.quantization import TensorCalibrationReader, pad_in_uint8, quantize_int8, vnni_cpu

#: bf16 against float32 on the heat map (in [0, 1]) and on DNet's logit: bf16 keeps ~3 significant digits
BF16_HEATMAP_ATOL = 0.02
BF16_LOGIT_ATOL = 0.05
#: int8 against float32 ONNX, as the correlation over the test images' heat-map pixels and over their logits. The
#: nets here have random weights: their int8 error compounds over ~16 quantised layers with no trained structure to
#: dominate it (measured 0.971-0.977); leaving the convolutions' outputs unquantised gave 0.91-0.95.
#: What int8 costs a trained model is its test-fold AP, measured by benchmarks/int8_accuracy.py.
#: On a CPU without VNNI the weights keep 7 bits (``reduce_range``, workflow/quantization.py): 0.946 measured on a
#: 2-core AVX2 AMD EPYC, hence the lower bar there.
INT8_MIN_CORRELATION = 0.95 if vnni_cpu() else 0.92


class Holder(nn.Module):
    """Stands in for the weak LightningModule: what the backends use of it is its ``net``, ``exportable`` and
    ``export_target()``."""

    exportable = True

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def export_target(self) -> ExportTarget:
        return weak_export_target(self.net)


def trained_like_net() -> WeakDefectNet:
    """A small weak net with batch-norm statistics that are not the identity (as after training)."""
    torch.manual_seed(0)
    net = WeakDefectNet(lnet_wide=32, lnet_kernel=7)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, 96, 80))
    return net.eval()


def normalised_net(images: torch.Tensor) -> WeakDefectNet:
    """A small weak net whose batch norms hold the exact statistics of ``images`` (each layer's outputs normalised,
    as after training), so that its outputs vary from image to image."""
    torch.manual_seed(0)
    net = WeakDefectNet(lnet_wide=32, lnet_kernel=7)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: the statistics of the images seen
    net.train()
    with torch.no_grad():
        net(images)
    return net.eval()


def random_images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 1, 96, 80, generator=torch.Generator().manual_seed(seed))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.mark.parametrize("backend", ["torchscript", "onnx"])
def test_exported_backends_give_the_torch_outputs(backend: str, tmp_path: Path) -> None:
    net = trained_like_net()
    images = torch.rand(2, 1, 96, 80)
    with torch.no_grad():
        heat_ref, logit_ref = net(images)
        module = with_backend(Holder(net), backend, images[:1], tmp_path)
        assert isinstance(module.net, nn.Module) and module.net is not net
        heat, logit = module.net(images)
        other_size = torch.rand(1, 1, 112, 72)  # dynamic sides: another size from the same file
        assert torch.allclose(module.net(other_size)[1], net(other_size)[1], atol=1e-4)
    assert heat.shape == heat_ref.shape == (2, 1, 12, 10)
    assert torch.allclose(heat, heat_ref, atol=1e-5)
    assert torch.allclose(logit, logit_ref, atol=1e-4)


def test_the_baseline_runs_on_its_own_export(tmp_path: Path) -> None:
    """backend=onnx and torchscript export the method's own target: the baseline's CAM classifier (ResNet, heat map
    at 1/32), not the weak model's network."""
    torch.manual_seed(0)
    module = ImageClassifierModule(CamClassifier("resnet10t")).eval()
    images = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        heat_ref, logit_ref = module.net(images)
        for backend in ("onnx", "torchscript"):
            exported = with_backend(ImageClassifierModule(module.net), backend, images[:1], tmp_path / backend)
            heat, logit = exported.net(images)
            assert heat.shape == heat_ref.shape == (2, 1, 3, 2), backend
            assert torch.allclose(heat, heat_ref, atol=1e-5) and torch.allclose(logit, logit_ref, atol=1e-4), backend
    assert (tmp_path / "onnx" / "model.onnx").is_file() and (tmp_path / "torchscript" / "model.pt").is_file()


def test_torch_backend_is_the_module_itself(tmp_path: Path) -> None:
    holder = Holder(trained_like_net())
    assert with_backend(holder, "torch", torch.rand(1, 1, 64, 64), tmp_path) is holder
    with pytest.raises(ValueError, match="backend must be one of"):
        with_backend(holder, "tensorrt", torch.rand(1, 1, 64, 64), tmp_path)
    with pytest.raises(ValueError, match="backend must be one of"):
        with_backend(holder, "int8", torch.rand(1, 1, 64, 64), tmp_path)


def test_calibration_reader_feeds_each_image_once() -> None:
    images = random_images(3, 0)
    reader = TensorCalibrationReader(images, "image")
    fed = [reader.get_next() for _ in range(4)]
    assert fed[3] is None
    for i, batch in enumerate(fed[:3]):
        assert list(batch) == ["image"] and batch["image"].shape == (1, 1, 96, 80)
        assert np.array_equal(batch["image"], images[i : i + 1].numpy())


def test_int8_backend_tracks_float32_onnx(tmp_path: Path) -> None:
    """backend=onnx_int8 by name: an int8 QDQ file, calibrated on the images passed, whose heat maps and logits
    follow the float32 ONNX file's on other images (:data:`INT8_MIN_CORRELATION`) without equalling them."""
    net = normalised_net(random_images(16, 1))
    test_images = random_images(16, 3)
    reference = onnx_session_runner(export_net(net, "onnx", test_images[:1], tmp_path / "fp32.onnx"))(test_images)
    with pytest.raises(ValueError, match="needs calibration images"):
        with_backend(Holder(net), "onnx_int8", test_images[:1], tmp_path / "int8")
    module = with_backend(Holder(net), "onnx_int8", test_images[:1], tmp_path / "int8", random_images(8, 2))
    assert isinstance(module.net, ExportedNet)
    ops = {node.op_type for node in onnx.load(tmp_path / "int8" / "model_int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with torch.no_grad():
        heatmap, logit = module.net(test_images)
    assert heatmap.shape == reference[0].shape and logit.shape == reference[2].shape
    assert correlation(heatmap.numpy(), reference[0]) > INT8_MIN_CORRELATION
    assert correlation(logit.numpy(), reference[2]) > INT8_MIN_CORRELATION
    assert not np.allclose(logit.numpy(), reference[2], atol=1e-4)  # it did run quantised


def input_scale(path: Path) -> float:
    """The scale of the graph's first QuantizeLinear: that of the input image, mirror-padded (the same values)."""
    model = onnx.load(path)
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    scales = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(scales[node.input[1]])


def test_int8_calibration_uses_the_images_passed(tmp_path: Path) -> None:
    """The input's uint8 range is the calibration images' own: [0, their maximum] over 255 steps."""
    net = normalised_net(random_images(4, 1))
    fp32 = export_net(net, "onnx", random_images(1, 0), tmp_path / "fp32.onnx")
    for name, images in {"bright": random_images(2, 2), "dark": random_images(2, 2) * 0.25}.items():
        path = quantize_int8(fp32, tmp_path / f"{name}.onnx", images)
        assert input_scale(path) == pytest.approx(float(images.max()) / 255, rel=1e-5), name
    with pytest.raises(ValueError, match="at least one calibration image"):
        quantize_int8(fp32, tmp_path / "none.onnx", random_images(0, 0))


def padded_from_dequantized(model: onnx.ModelProto) -> int:
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    return sum(producer.get(n.input[0]) == "DequantizeLinear" for n in model.graph.node if n.op_type == "Pad")


def test_int8_pads_the_uint8_maps_with_the_same_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of the net's 12 mirror paddings (9 shared layers, 3 LNet) pads the quantised map, not a float copy of it
    between a DequantizeLinear and a QuantizeLinear; ONNX Runtime gives bit-identical outputs either way."""
    import workflow.quantization as quantization

    net = normalised_net(random_images(4, 1))
    fp32 = export_net(net, "onnx", random_images(1, 0), tmp_path / "fp32.onnx")
    monkeypatch.setattr(quantization, "pad_in_uint8", lambda model: 0)
    float_pads = onnx.load(quantize_int8(fp32, tmp_path / "float_pads.onnx", random_images(4, 2)))
    monkeypatch.undo()
    assert padded_from_dequantized(float_pads) == 12
    uint8_pads = onnx.load(quantize_int8(fp32, tmp_path / "uint8_pads.onnx", random_images(4, 2)))
    assert padded_from_dequantized(uint8_pads) == 0
    assert sum(n.op_type == "Pad" for n in uint8_pads.graph.node) == 12
    # each padding drops a Q and a DQ, but the image's Q stays (it feeds the first Pad)
    assert len(float_pads.graph.node) - len(uint8_pads.graph.node) == 24 - 1
    images = random_images(3, 3)
    outputs = [onnx_session_runner(tmp_path / f"{name}.onnx")(images) for name in ("float_pads", "uint8_pads")]
    for a, b in zip(*outputs, strict=True):
        assert np.array_equal(a, b)


def qdq_pad_graph(mode: str, scale_out: float) -> onnx.ModelProto:
    """uint8 x -> DequantizeLinear (scale 0.1) -> Pad(mode) -> QuantizeLinear (scale ``scale_out``) -> y."""
    from onnx import TensorProto, helper

    inits = [numpy_helper.from_array(np.array(v, dtype=d), n) for n, v, d in (
        ("s_in", 0.1, np.float32), ("s_out", scale_out, np.float32), ("zp", 0, np.uint8),
        ("pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64))]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s_in", "zp"], ["xf"]),
             helper.make_node("Pad", ["xf", "pads"], ["pf"], mode=mode),
             helper.make_node("QuantizeLinear", ["pf", "s_out", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(("mode", "scale_out", "rewritten"),
                         [("reflect", 0.1, 1), ("edge", 0.1, 1), ("reflect", 0.2, 0), ("constant", 0.1, 0)])
def test_pad_in_uint8_rewrites_only_value_copying_pads_between_equal_grids(mode: str, scale_out: float,
                                                                           rewritten: int) -> None:
    """A constant padding adds a value the grid may not hold, and another output scale re-quantises: both stay."""
    import onnxruntime as ort

    model = qdq_pad_graph(mode, scale_out)
    x = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4) * 9
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    model.graph.value_info.extend(onnx.shape_inference.infer_shapes(model).graph.value_info)  # xf, pf: float
    assert pad_in_uint8(model) == rewritten
    assert sorted(v.name for v in model.graph.value_info) == ([] if rewritten else ["pf", "xf"])
    assert [n.op_type for n in model.graph.node] == (["Pad"] if rewritten else ["DequantizeLinear", "Pad",
                                                                                "QuantizeLinear"])
    onnx.checker.check_model(model)
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.array_equal(before[0], after[0])


@pytest.mark.skipif(not native_bf16(), reason="bf16 only where the CPU runs it natively")
def test_bf16_backend_stays_within_its_tolerance_of_float32() -> None:
    net = trained_like_net()
    images = torch.rand(2, 1, 96, 80)
    with torch.no_grad():
        heat_ref, logit_ref = net(images)
        heat, logit = Bf16Net(net)(images)
    assert heat.dtype == logit.dtype == torch.float32
    assert (heat - heat_ref).abs().max() <= BF16_HEATMAP_ATOL
    assert (logit - logit_ref).abs().max() <= BF16_LOGIT_ATOL
    assert not torch.equal(heat, heat_ref)  # it did run in bf16


def test_predict_py_gives_the_same_rows_on_every_exact_backend(tmp_path: Path) -> None:
    """predict.py backend=torch|torchscript|onnx on one trained checkpoint: the same probabilities per image."""
    import predict
    from tests.inference_helpers import weak_checkpoint
    from tests.test_predict import predict_cfg, read_csv, write_mixed_images

    ckpt = weak_checkpoint(tmp_path / "run")
    folder = tmp_path / "images"
    folder.mkdir()
    write_mixed_images(folder)
    probabilities = {}
    for backend in ("torch", "torchscript", "onnx"):
        out = tmp_path / backend
        predict.run(predict_cfg(ckpt, folder, out, overlays=False, backend=backend))
        rows = read_csv(out / "predictions.csv")
        probabilities[backend] = {r["name"]: float(r["probability"]) for r in rows}
    assert len(probabilities["torch"]) >= 3
    for backend in ("torchscript", "onnx"):
        assert probabilities[backend].keys() == probabilities["torch"].keys()
        for name, p in probabilities["torch"].items():
            assert abs(probabilities[backend][name] - p) < 1e-5, (backend, name)


def test_predict_py_onnx_below_the_dynamic_minimum(tmp_path: Path,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """Images all resized below the ONNX file's dynamic minimum (64 px for the weak net): a fixed-shape export gives
    torch's probabilities. At native size an image below it is refused with a DatasetError naming it, before ONNX
    Runtime sees it."""
    import predict
    from datamodules.errors import DatasetError
    from tests.inference_helpers import weak_checkpoint
    from tests.test_predict import predict_cfg, read_csv, write_mixed_images

    ckpt = weak_checkpoint(tmp_path_factory.getbasetemp())
    folder = tmp_path / "images"
    folder.mkdir()
    write_mixed_images(folder)
    probabilities = {}
    for backend in ("torch", "onnx"):
        predict.run(predict_cfg(ckpt, folder, tmp_path / backend, overlays=False, backend=backend, resize=[40, 48]))
        probabilities[backend] = [float(r["probability"]) for r in read_csv(tmp_path / backend / "predictions.csv")]
    assert len(probabilities["onnx"]) >= 3 and probabilities["onnx"] == pytest.approx(probabilities["torch"], abs=1e-5)
    with pytest.raises(DatasetError, match=r"a_gray.png is 40x72: this model needs at least 64 pixels"):
        predict.run(predict_cfg(ckpt, folder, tmp_path / "native", overlays=False, backend="onnx", resize="native"))


def test_predict_py_int8_calibrates_on_the_folds_training_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    """predict.py backend=onnx_int8: the calibration images are drawn from the checkpoint fold's training images,
    never its test images, and the probabilities stay near float32's."""
    import predict
    import workflow.quantization as quantization
    from lightning_modules.checkpoints import load_trained_model
    from tests.inference_helpers import weak_checkpoint
    from tests.test_predict import predict_cfg, read_csv, write_mixed_images

    ckpt = weak_checkpoint(tmp_path_factory.getbasetemp())
    folder = tmp_path / "images"
    folder.mkdir()
    write_mixed_images(folder)
    offered: list[Path] = []
    chosen = quantization.calibration_images

    def spy(files: list[Path], *args, **kwargs) -> torch.Tensor:
        offered.extend(files)
        return chosen(files, *args, **kwargs)

    monkeypatch.setattr(quantization, "calibration_images", spy)
    probabilities = {}
    for backend in ("onnx", "onnx_int8"):
        out = tmp_path / backend
        predict.run(predict_cfg(ckpt, folder, out, overlays=False, backend=backend, calibration_images=4))
        probabilities[backend] = [float(r["probability"]) for r in read_csv(out / "predictions.csv")]
    datamodule = load_trained_model(ckpt).datamodule()
    assert set(offered) == {s.image for s in datamodule.train_samples}
    assert not set(offered) & {s.image for s in datamodule.test_samples}
    info = (tmp_path / "onnx_int8" / "predict_info.json").read_text()
    assert '"backend": "onnx_int8"' in info and '"calibration_images": 4' in info
    assert np.abs(np.subtract(probabilities["onnx_int8"], probabilities["onnx"])).max() < 0.05
