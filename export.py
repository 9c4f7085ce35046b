"""Export a trained model: ``python export.py ckpt_path=<checkpoint> format=[onnx,torchscript]``.

The model is rebuilt by its method's ``load_from_checkpoint`` (:mod:`lightning_modules.checkpoints`), and the
method says what is exported (:meth:`~lightning_modules.method.DefectMethod.export_target`; the weak method
exports :class:`~lightning_modules.weak.export.WeakInference`: one input ``image`` (N, C, H, W) = pixels / 255
in the trained color mode, resized as in training; outputs ``heatmap``, ``probability`` and ``logit``). Each
exported file is run (onnxruntime, ``torch.jit.load``) and compared with PyTorch on the example input and,
with dynamic axes, on a batch of 2 at another size; the differences go to ``export_info.json``, and an
export that differs by more than ``atol`` fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from lightning_modules.checkpoints import TrainedModel, load_trained_model
from lightning_modules.exporters import (
    EXPORTERS,
    SUFFIXES,
    ExportSpec,
    ExportTarget,
    compare_outputs,
    reference_outputs,
)
from lightning_modules.method import exportable_methods
from workflow.errors import SettingError
from workflow.failure import reported_failures
from workflow.quiet import quiet_third_party

log = logging.getLogger(__name__)

#: a second check size for dynamic exports: this much larger than the example (H, W), and a batch of 2
EXTRA_CHECK = (24, 40)


class ExportMismatch(RuntimeError):
    """An exported file gives outputs further from PyTorch's than the tolerance."""


def export_target(model: TrainedModel) -> ExportTarget:
    """The method's export target; a method that does not export is an error naming the exportable ones."""
    if not model.module.exportable:
        raise SettingError(f"{model.checkpoint} holds a {model.module.name!r} model, which does not export; "
                        f"exportable methods: {exportable_methods()}")
    return model.module.export_target()


def formats_of(option: str | Sequence[str]) -> list[str]:
    formats = [option] if isinstance(option, str) else list(option)
    unknown = sorted(set(formats) - set(EXPORTERS))
    if unknown or not formats:
        raise ValueError(f"format must be among {sorted(EXPORTERS)} (one or a list), got {formats}")
    return formats


def example_size(option: Sequence[int] | None, model: TrainedModel) -> tuple[int, int]:
    size = option if option is not None else model.image_size
    if size is None:
        raise ValueError("the checkpoint's config has no data.image_size: set image_size=[H,W]")
    return int(size[0]), int(size[1])


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` in every format of ``cfg.format``; check each file; return the export info."""
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_trained_model(cfg.ckpt_path)
    target = export_target(model)
    height, width = example_size(cfg.get("image_size"), model)
    dynamic = bool(cfg.dynamic)
    if dynamic and min(height, width) < target.min_side:
        log.warning("image size %dx%d is below the dynamic minimum %d: exporting a fixed shape", height, width,
                    target.min_side)
        dynamic = False
    spec = ExportSpec("image", target.output_names, target.min_side if dynamic else None, cfg.get("opset"))
    generator = torch.Generator().manual_seed(int(cfg.seed))
    channels = model.in_channels
    example = torch.rand(int(cfg.batch_size), channels, height, width, generator=generator)
    inputs = [example]
    if dynamic:
        inputs.append(torch.rand(2, channels, height + EXTRA_CHECK[0], width + EXTRA_CHECK[1], generator=generator))
    info: dict[str, Any] = {
        "checkpoint": str(model.checkpoint), "method": model.module.name,
        "input": {"name": spec.input_name, "shape": ["batch" if dynamic else example.shape[0], channels,
                                                     "height" if dynamic else height, "width" if dynamic else width],
                  "dtype": "float32", "color_mode": model.color_mode, "example_size": [height, width],
                  "trained_image_size": model.image_size, "min_side": target.min_side if dynamic else None,
                  "preprocessing": "grayscale (as trained), resized to the trained size with bilinear "
                                   "filtering on 8-bit pixels, divided by 255"},
        "outputs": list(target.output_names), "dynamic": dynamic, "atol": float(cfg.atol),
        "torch": torch.__version__, "files": {},
    }
    references = reference_outputs(target.module, inputs)  # once for every format
    for fmt in formats_of(cfg.format):
        path = out_dir / f"model{SUFFIXES[fmt]}"
        runner = EXPORTERS[fmt](target.module, example, path, spec)
        checks = compare_outputs(references, runner, inputs, target.output_names)
        worst = max(v for c in checks for v in c["max_abs_diff"].values())
        info["files"][fmt] = {"path": str(path), "checks": checks, "max_abs_diff": worst}
        log.info("%s: %s, max abs difference to PyTorch %.3g on %s", fmt, path, worst,
                 [c["input_shape"] for c in checks])
        print(f"{fmt}: {path} max_abs_diff={worst:.3g}")
    (out_dir / "export_info.json").write_text(json.dumps(info, indent=2))
    bad = {fmt: f["max_abs_diff"] for fmt, f in info["files"].items() if f["max_abs_diff"] > cfg.atol}
    if bad:
        raise ExportMismatch(f"exported outputs differ from PyTorch by more than atol={cfg.atol}: {bad}")
    return info


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    quiet_third_party()
    with reported_failures(cfg.output_dir):  # status and error in run_info.json; project errors as one line
        run(cfg)


if __name__ == "__main__":
    main()
