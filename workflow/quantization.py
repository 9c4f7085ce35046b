"""int8 static quantisation of an exported float32 ONNX file with ONNX Runtime (``predict.py backend=onnx_int8``).

What :func:`quantize_int8` asks of ``onnxruntime.quantization``: its pre-processing (graph optimisation, which
folds batch norm into the convolutions, and ONNX shape inference; the symbolic shape inference is skipped, it fails
on the exporter's dynamic sides), then ``quantize_static`` in QDQ format with int8 weights per output channel and
uint8 activations (U8S8, what ORT's x86 int8 kernels compute). On a CPU without VNNI the weights use 7 bits
(``reduce_range``), as ORT's documentation recommends against the saturation of the AVX2/AVX512 U8S8 instruction;
with VNNI (no saturation) they use all 8.

Choices, from fold 0 of a trained KolektorSDD model at 440x160 (``benchmarks/int8_accuracy.py``, exploratory runs;
float32 test AP 0.988):

* Only convolutions with their ReLU, max-pools and mirror paddings are quantised (:data:`QUANTISED_OPS`: nearly all
  of the FLOPs),
  and the layers the caller names stay float32 (the weak net's decision net and LNet's output convolution, as under
  bf16 autocast). Quantising every operator also put the heat map and DNet's pooled features on uint8 grids: AP
  0.943. Without ``Relu`` in the list the convolutions' outputs are not quantised (no int8 output kernel) and the
  probabilities moved by up to 0.10 instead of 0.004.
* Ranges by min-max over the calibration images, not by percentile: a defect is the rare large activation that a
  percentile clips (with 16 calibration images one test image's probability moved by 0.99).
* Mirror padding copies values, so its input and output share one scale; ORT still runs it in float32 between a
  ``DequantizeLinear`` and a ``QuantizeLinear`` (about 7% of the int8 time at 1408x512). :func:`pad_in_uint8`
  pads the uint8 tensor instead: the same numbers, fewer passes over the largest maps.

These were chosen looking at that fold's test AP, the one ``benchmarks/results/archive/int8_accuracy_direct_graph.json``
reports (the graph before LNet's Fourier path).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from datamodules.image_files import load_image

#: calibration images predict.py takes from the fold's training images (at most)
CALIBRATION_IMAGES = 32
#: the operators quantised (the others run in float32 between them)
QUANTISED_OPS = ("Conv", "Relu", "MaxPool", "Pad")


class TensorCalibrationReader(CalibrationDataReader):
    """Feeds an (N, C, H, W) tensor to the calibration one image at a time: ``{input_name: (1, C, H, W)}``."""

    def __init__(self, images: torch.Tensor, input_name: str = "image") -> None:
        self.images = images.detach().float().cpu()
        self.input_name = input_name
        self.next_index = 0

    def get_next(self) -> dict | None:
        if self.next_index >= len(self.images):
            return None
        image = self.images[self.next_index : self.next_index + 1].numpy()
        self.next_index += 1
        return {self.input_name: image}


def vnni_cpu() -> bool:
    """Whether the CPU has an int8 dot-product instruction (AVX512-VNNI or AVX-VNNI; Linux ``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in text or "avx_vnni" in text


def nodes_with_weights(path: Path, prefixes: Sequence[str]) -> list[str]:
    """The nodes of the ONNX file ``path`` that take a weight whose name starts with one of ``prefixes``."""
    prefixes = tuple(prefixes)
    if not prefixes:
        return []
    return [node.name for node in onnx.load(str(path)).graph.node if any(i.startswith(prefixes) for i in node.input)]


def pad_in_uint8(model: onnx.ModelProto) -> int:
    """Rewrite each ``DequantizeLinear -> Pad -> QuantizeLinear`` of ``model`` (in place) whose ends have the same
    scale and zero point, and whose padding only copies values (mode ``reflect``, ``edge`` or ``wrap``), as a ``Pad``
    of the quantised tensor: the same numbers. Returns how many it rewrote."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}  # read as arrays only where compared (not the weights)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def same(a: str, b: str) -> bool:
        return a in constants and b in constants and np.array_equal(numpy_helper.to_array(constants[a]),
                                                                    numpy_helper.to_array(constants[b]))

    def copying(pad: onnx.NodeProto) -> bool:
        mode = next((onnx.helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
        return mode in (b"reflect", b"edge", b"wrap")

    dropped: set[int] = set()
    rewritten = 0
    for pad in (n for n in graph.node if n.op_type == "Pad" and copying(n) and n.output[0] not in outputs):
        dq, after = producer.get(pad.input[0]), consumers.get(pad.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1:
            continue
        q = after[0]
        if q.op_type != "QuantizeLinear" or not all(same(dq.input[i], q.input[i]) for i in (1, 2)):
            continue
        pad.input[0], pad.output[0] = dq.input[0], q.output[0]
        rewritten += 1
        dropped.add(id(q))
        if len(consumers[dq.output[0]]) == 1 and dq.output[0] not in outputs:
            dropped.add(id(dq))
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    removed = set(producer) - {out for node in kept for out in node.output}  # the float tensors no node writes now
    known = [v for v in graph.value_info if v.name not in removed]
    del graph.value_info[:]
    graph.value_info.extend(known)
    return rewritten


def quantize_int8(fp32_path: Path, out_path: Path, calibration: torch.Tensor, input_name: str = "image",
                  keep_float: Sequence[str] = ()) -> Path:
    """Write ``fp32_path`` (a float32 ONNX file) quantised to int8 to ``out_path``, its activation ranges calibrated
    on ``calibration`` (N, C, H, W: images as the model sees them, never test images); the layers whose weight names
    start with one of ``keep_float`` stay float32; mirror paddings pad the uint8 tensors (:func:`pad_in_uint8`)."""
    if len(calibration) == 0:
        raise ValueError("int8 quantisation needs at least one calibration image")
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_path), TensorCalibrationReader(calibration, input_name),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTISED_OPS), per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=not vnni_cpu(),
                        nodes_to_exclude=nodes_with_weights(prepared, keep_float))
    model = onnx.load(str(out_path))
    if pad_in_uint8(model):
        onnx.save(model, str(out_path))
    return out_path


def calibration_images(files: Sequence[Path], mode: str, size: Sequence[int], count: int = CALIBRATION_IMAGES
                       ) -> torch.Tensor:
    """Up to ``count`` of ``files``, evenly spaced over the list, decoded as prediction decodes them
    (:func:`datamodules.image_files.load_image`: ``mode``, resized to ``size`` (H, W)), as one (N, C, H, W) tensor."""
    if not files:
        raise ValueError("no calibration images")
    step = max(1.0, len(files) / count)
    chosen = [files[int(i * step)] for i in range(min(count, len(files)))]
    return torch.stack([load_image(path, mode, size)[1] for path in chosen])
