"""Where a detection network (the weak model or the baseline) runs at prediction time:
``predict.py backend=torch|torch_bf16|torchscript|onnx|onnx_int8``.

* ``torch``: the checkpoint's network in PyTorch, float32 (the reference).
* ``torch_bf16``: the same network in channels-last memory format under ``torch.autocast("cpu", torch.bfloat16)``
  (the output layers stay float32, :func:`lightning_modules.weak.networks.in_float32`). Only on a CPU that runs
  bf16 natively (AVX512-BF16 / AMX, :func:`workflow.precision.native_bf16`): there it ran 2.9x faster than eager
  float32 at 1408x512 (``benchmarks/results/cpu_speed.json``, a loaded machine; 2.4x at an idle moment, see
  docs/cpu.md); emulated bf16 is many times slower. Reduced precision: its outputs differ from float32 by up to the
  tolerances in ``tests/test_inference_backends.py``.
* ``torchscript`` and ``onnx``: the method's ``export_target()`` exported by :mod:`lightning_modules.exporters`
  (the code ``export.py`` uses) into a scratch folder, then run from the file (``torch.jit.load``; ONNX Runtime on
  the CPU with all graph optimisations and one intra-op thread per core). Same outputs as ``torch`` to float
  rounding.
* ``onnx_int8``: the ``onnx`` file quantised to int8 by ONNX Runtime's static quantisation
  (:mod:`workflow.quantization`: convolutions and max-pools; the target's ``float_layers`` left float32, for the
  weak model the decision net and LNet's output layer), its activation ranges calibrated on images the caller
  passes (predict.py: the fold's training images), then run as ``onnx``. Approximate: its test-fold AP against
  float32 is what ``benchmarks/int8_accuracy.py`` measures.

Each backend replaces the module's ``net`` by a module with the same call (image -> heat map, logits), so the
prediction code (:mod:`workflow.prediction`) is the same for all of them.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from lightning_modules.exporters import EXPORTERS, ExportSpec, ExportTarget, Runner, torchscript_runner
from lightning_modules.weak.export import weak_export_target
from workflow.errors import SettingError
from workflow.precision import native_bf16

BACKENDS = ("torch", "torch_bf16", "torchscript", "onnx", "onnx_int8")
#: the backends that need calibration images
CALIBRATED_BACKENDS = ("onnx_int8",)


class Bf16Net(nn.Module):
    """The network in channels-last format under CPU bf16 autocast; returns float32 outputs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            heatmap, logits = self.net(x.contiguous(memory_format=torch.channels_last))
        return heatmap.float(), logits.float()


class ExportedNet(nn.Module):
    """An exported file's runner (image -> heat map, probability, logit as numpy) with the network's call."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heatmap, _, logits = self.runner(x.float().cpu())
        return torch.from_numpy(np.asarray(heatmap)), torch.from_numpy(np.asarray(logits))


def onnx_session_runner(path: str | Path, input_name: str = "image", threads: int | None = None,
                        level: str = "all") -> Runner:
    """ONNX Runtime on the CPU: ``threads`` intra-op threads (default: the cores PyTorch uses), graph
    optimisation ``level`` (``disable``, ``basic``, ``extended``, ``all``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {input_name: x.detach().cpu().numpy()})


def export_file(target: ExportTarget, fmt: str, example: torch.Tensor, path: Path, fixed: bool = False) -> Path:
    """Write ``target`` in ``fmt`` to ``path``, with dynamic batch and sides: the example's sides are raised to
    the target's ``min_side``, so the file takes every size from there on (ONNX; TorchScript takes any size).
    ``fixed``: the example's sides only, any batch (inputs all of one size, smaller than ``min_side``)."""
    if fixed:
        spec = ExportSpec("image", target.output_names, dynamic_batch=True)
        EXPORTERS[fmt](target.module, torch.rand(1, *example.shape[1:]), path, spec)
        return path
    height, width = (max(side, target.min_side) for side in example.shape[-2:])
    example = torch.rand(1, example.shape[1], height, width)
    EXPORTERS[fmt](target.module, example, path, ExportSpec("image", target.output_names, target.min_side))
    return path


def export_net(net: nn.Module, fmt: str, example: torch.Tensor, path: Path) -> Path:
    """:func:`export_file` of the weak ``net`` (:func:`weak_export_target`; 64 px and up for the paper's net)."""
    return export_file(weak_export_target(net), fmt, example, path)


def with_backend(module: L.LightningModule, backend: str, example: torch.Tensor, work_dir: Path,
                 calibration: torch.Tensor | None = None, one_size: bool = False) -> L.LightningModule:
    """``module`` (changed in place) with its network running on ``backend``; ``example`` (N, C, H, W) is the
    export's example input (see :func:`export_file`), ``work_dir`` holds the exported file, ``calibration``
    (N, C, H, W) the images ``onnx_int8`` calibrates its activation ranges on. What is exported is the method's
    own ``export_target()`` (the weak model's or the baseline's). ``one_size``: every input will have the example's
    size, so a size below the dynamic minimum is exported as a fixed shape; otherwise the module's ``min_side`` is
    raised to that minimum (smaller images are refused before they reach ONNX Runtime)."""
    if backend not in BACKENDS:
        raise SettingError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return module
    if not getattr(module, "exportable", False):
        raise SettingError(f"backend={backend} is defined for the exportable methods only; use backend=torch")
    if backend in CALIBRATED_BACKENDS and calibration is None:
        raise SettingError(f"backend={backend} needs calibration images")
    module.net.cpu().eval()
    if backend == "torch_bf16":
        if not native_bf16():
            raise SettingError("backend=torch_bf16 needs a CPU with native bf16 (AVX512-BF16/AMX); use backend=onnx")
        module.net = Bf16Net(module.net)
        return module
    target = module.export_target()
    work_dir.mkdir(parents=True, exist_ok=True)
    if backend == "torchscript":
        module.net = ExportedNet(torchscript_runner(export_file(target, backend, example, work_dir / "model.pt")))
        return module
    fixed = one_size and min(example.shape[-2:]) < target.min_side
    if not fixed:
        module.min_side = max(getattr(module, "min_side", 1), target.min_side)
    path = export_file(target, "onnx", example, work_dir / "model.onnx", fixed)
    if backend == "onnx_int8":
        from workflow.quantization import quantize_int8

        path = quantize_int8(path, work_dir / "model_int8.onnx", calibration, keep_float=target.float_layers)
    module.net = ExportedNet(onnx_session_runner(path))
    return module
