"""Predict with a trained model: ``python predict.py ckpt_path=<checkpoint> input=<image or folder>``.

The model is rebuilt by its method's ``load_from_checkpoint`` (:mod:`lightning_modules.checkpoints`: a safe load,
no code in the file runs); images are decoded as in training (:mod:`datamodules.image_files`): the trained color
mode (grayscale), resized to the training ``data.image_size`` by default (``resize=native`` keeps each image's
size). Outputs (``conf/predict.yaml``): ``predictions.csv`` (the method's prediction columns), heat-map
``overlays/`` where the method gives heat maps, and ``predict_info.json``.
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

from datamodules.image_files import list_images
from lightning_modules.checkpoints import TrainedModel, load_trained_model
from workflow.errors import SettingError
from workflow.failure import reported_failures
from workflow.inference_backends import CALIBRATED_BACKENDS, with_backend
from workflow.prediction import predict_files, write_rows
from workflow.quiet import quiet_third_party
from workflow.screening import screen_images

log = logging.getLogger(__name__)


def input_size(resize: str | Sequence[int], trained: tuple[int, int] | None) -> tuple[int, int] | None:
    """The (H, W) images are resized to, or ``None`` for native size, from the ``resize`` option."""
    if not isinstance(resize, str):
        if len(resize) != 2:
            raise SettingError(f"resize=[H, W] needs two sizes, got {list(resize)}")
        return int(resize[0]), int(resize[1])
    if resize == "trained" and trained is None:
        raise SettingError("the checkpoint's config has no data.image_size: set resize=native or resize=[H,W]")
    options: dict[str, tuple[int, int] | None] = {"trained": trained, "native": None}
    if resize not in options:
        raise SettingError(f"resize must be 'trained', 'native' or [H, W], got {resize!r}")
    return options[resize]


def resolve_threshold(option: float | str | None, model: TrainedModel) -> tuple[float | None, str]:
    """(threshold, where it came from) for the label column of a thresholded method (the weak one)."""
    if not model.module.thresholded or option is None:
        return None, "none"
    if option == "auto":
        threshold = model.fixed_threshold()
        if threshold is None:
            log.warning("threshold=auto: no fixed_threshold for this checkpoint's fold (no metrics.json in the run "
                        "folder above %s, e.g. an interrupted run): no label column; give threshold=<number>",
                        model.checkpoint)
        return threshold, ("fold fixed_threshold in metrics.json" if threshold is not None else "none")
    return float(option), "option"


def resolve_device(option: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if option == "auto" else option)


def fold_calibration(model: TrainedModel, cfg: DictConfig, size: tuple[int, int] | None) -> torch.Tensor:
    """Up to ``cfg.calibration_images`` training images of the checkpoint's fold (never its test images), at the
    prediction size (the training size for ``resize=native``), for the backends that calibrate."""
    from workflow.quantization import CALIBRATION_IMAGES, calibration_images  # loads ONNX Runtime's quantisation

    datamodule = model.datamodule(list(cfg.get("calibration_data", [])))
    size = size or model.image_size or datamodule.image_size
    return calibration_images([s.image for s in datamodule.train_samples], model.color_mode, size,
                              int(cfg.get("calibration_images", CALIBRATION_IMAGES)))


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """Predict every image of ``cfg.input``; write the outputs to ``cfg.output_dir``; return the rows."""
    out_dir = Path(cfg.output_dir)
    model = load_trained_model(cfg.ckpt_path)
    method = model.module.name
    size = input_size(cfg.resize, model.image_size)
    threshold, threshold_source = resolve_threshold(cfg.get("threshold"), model)
    root, files = list_images(cfg.input)
    files, skipped = screen_images(files, root, cfg.get("on_error", "abort"))
    backend = str(cfg.get("backend", "torch"))
    example = torch.rand(1, model.in_channels, *(size or model.image_size or (256, 256)))
    color_mode = model.color_mode  # read from the network before a backend replaces it
    calibration = fold_calibration(model, cfg, size) if backend in CALIBRATED_BACKENDS else None
    module = with_backend(model.module, backend, example, out_dir / "backend", calibration, one_size=size is not None)
    rows = predict_files(module, files, root, color_mode, size,
                         out_dir=out_dir if cfg.get("overlays", True) else None, batch_size=int(cfg.batch_size),
                         threshold=threshold, device=resolve_device(cfg.device))
    write_rows(out_dir / "predictions.csv", rows)
    info = {"checkpoint": str(model.checkpoint), "model": method,
            "color_mode": color_mode, "trained_image_size": model.image_size,
            "input_size": list(size) if size else "native", "threshold": threshold,
            "threshold_source": threshold_source, "input": str(cfg.input), "n_images": len(rows),
            "skipped": skipped, "backend": backend,
            "calibration_images": len(calibration) if calibration is not None else 0}
    (out_dir / "predict_info.json").write_text(json.dumps(info, indent=2))
    log.info("%d images (%s model, input %s): %s", len(rows), method, info["input_size"],
             out_dir / "predictions.csv")
    return rows


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    quiet_third_party()
    with reported_failures(cfg.output_dir):
        run(cfg)


if __name__ == "__main__":
    main()
