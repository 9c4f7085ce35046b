"""Export an inference module to ONNX or TorchScript, and check the exported file against PyTorch.

* ONNX: ``torch.onnx.export(dynamo=True)`` (the ``torch.export`` based exporter, torch's default; needs
  ``onnxscript``), weights inside the ``.onnx`` file, optionally with dynamic batch, height and width
  (``torch.export.Dim`` with a lower bound on the sides). Run with onnxruntime on the CPU.
* TorchScript: ``torch.jit.script`` (not ``trace``): data-dependent branches such as the mirror padding's
  fallback stay branches, so the file takes any input size. ``torch.jit`` is deprecated in torch 2.14
  but works; its deprecation warning is silenced here.

Every exporter returns a *runner* (``image tensor -> list of numpy outputs``) that executes the exported
file itself, which :func:`compare_outputs` checks against the PyTorch module's outputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

Runner = Callable[[torch.Tensor], list[np.ndarray]]


@dataclass(frozen=True)
class ExportTarget:
    """What a method exports (:meth:`lightning_modules.method.DefectMethod.export_target`).

    Attributes:
        module: the inference module: one (N, C, H, W) image input, a tuple of outputs.
        output_names: the names of its outputs, in order.
        min_side: the smallest image side from which on a graph traced at one size is valid at every size.
        float_layers: weight-name prefixes (in ``module``) of the layers int8 quantisation keeps float32.
    """

    module: nn.Module
    output_names: tuple[str, ...]
    min_side: int
    float_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportSpec:
    """Names and shape rules of an export.

    Attributes:
        input_name: the name of the single (N, C, H, W) input.
        output_names: the names of the module's outputs, in order.
        min_side: dynamic batch, height and width for sides of at least this size; ``None`` fixes the
            example's shape (ONNX; TorchScript takes any size either way).
        opset: the ONNX opset; ``None`` takes the exporter's default.
        dynamic_batch: with ``min_side=None``, the batch dimension stays dynamic (the sides fixed).
    """

    input_name: str
    output_names: Sequence[str]
    min_side: int | None = None
    opset: int | None = None
    dynamic_batch: bool = False


def onnx_runner(path: str | Path, input_name: str) -> Runner:
    """Run an ONNX file with onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {input_name: x.detach().cpu().numpy()})


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, spec: ExportSpec) -> Runner:
    """Write ``module`` traced on ``example`` to ``path`` as ONNX (dynamo exporter); return its runner."""
    from torch.export import Dim

    dynamic_shapes = None
    if spec.min_side is not None:
        dynamic_shapes = {spec.input_name: {0: Dim("batch", min=1), 2: Dim("height", min=spec.min_side),
                                            3: Dim("width", min=spec.min_side)}}
    elif spec.dynamic_batch:
        dynamic_shapes = {spec.input_name: {0: Dim("batch", min=1)}}
    with torch.no_grad():  # traced as it runs at inference (LNet's Fourier path orders its last product for that)
        torch.onnx.export(module, (example,), str(path), input_names=[spec.input_name],
                          output_names=list(spec.output_names), dynamo=True, external_data=False,
                          dynamic_shapes=dynamic_shapes, opset_version=spec.opset, verbose=False)
    return onnx_runner(path, spec.input_name)


def torchscript_runner(path: str | Path) -> Runner:
    """Run a TorchScript file (CPU)."""
    loaded = torch.jit.load(str(path), map_location="cpu")

    def run(x: torch.Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in loaded(x)]

    return run


def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, spec: ExportSpec) -> Runner:
    """Write ``torch.jit.script(module)`` to ``path``; return its runner (``example`` is not needed)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        scripted = torch.jit.script(module)
        scripted.save(str(path))
        return torchscript_runner(path)


#: every export format: its exporter and the file suffix it writes
EXPORTERS: dict[str, Callable[[nn.Module, torch.Tensor, Path, ExportSpec], Runner]] = {
    "onnx": export_onnx,
    "torchscript": export_torchscript,
}
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


@torch.no_grad()
def reference_outputs(module: nn.Module, inputs: Sequence[torch.Tensor]) -> list[list[np.ndarray]]:
    """PyTorch's outputs of ``module`` for each input: what every exported file is compared with."""
    return [[t.detach().cpu().numpy() for t in module(x)] for x in inputs]


def compare_outputs(references: Sequence[Sequence[np.ndarray]], runner: Runner, inputs: Sequence[torch.Tensor],
                    output_names: Sequence[str]) -> list[dict]:
    """For each input: its shape and the largest absolute difference per output between PyTorch's outputs
    (:func:`reference_outputs`) and ``runner`` (the exported file). Outputs of different shapes are an error."""
    checks = []
    for x, expected in zip(inputs, references, strict=True):
        got = runner(x)
        diffs = {}
        for name, e, g in zip(output_names, expected, got, strict=True):
            if e.shape != g.shape:
                raise ValueError(f"output {name}: the export gives shape {g.shape}, PyTorch {e.shape}, "
                                 f"on input {tuple(x.shape)}")
            diffs[name] = float(np.abs(e - g).max()) if e.size else 0.0
        checks.append({"input_shape": list(x.shape), "max_abs_diff": diffs})
    return checks
