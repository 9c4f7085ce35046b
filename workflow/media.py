"""Images, figures and PR curves to every logger that can take them, PNG files where none can.

W&B (``WandbLogger``) and TensorBoard (``TensorBoardLogger``) take images; CSV and the rest do not, so
:func:`log_images` writes PNGs under a folder instead (callbacks pass the fold folder). Keys get the
logger's fold prefix (``fold0-heatmaps``) as its metrics do. Call from global rank 0 only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def prefixed(logger: Logger, key: str) -> str:
    """``key`` under the logger's prefix (``fold0-key``), as ``log_metrics`` writes it."""
    prefix = getattr(logger, "_prefix", "")
    return f"{prefix}{getattr(logger, 'LOGGER_JOIN_CHAR', '-')}{key}" if prefix else key


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def log_images(trainer: L.Trainer, key: str, images: Sequence[np.ndarray], names: Sequence[str], step: int,
               captions: Sequence[str] | None = None, fallback_dir: str | Path | None = None) -> list[Path]:
    """Log RGB uint8 ``HxWx3`` images: one W&B image list under ``key`` (with captions), one TensorBoard
    image per name (``key/name``; ``key`` for an empty name), or, when no logger takes images, PNGs
    ``<fallback_dir>/<key>/step<N>-<name>.png`` (returned)."""
    captions = list(captions) if captions is not None else list(names)
    taken = False
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key, list(images), step=step, caption=captions)
        elif isinstance(logger, TensorBoardLogger):
            for image, name in zip(images, names, strict=True):
                tag = f"{prefixed(logger, key)}/{_safe(name)}" if name else prefixed(logger, key)
                logger.experiment.add_image(tag, image, step, dataformats="HWC")
        else:
            continue
        taken = True
    if taken or fallback_dir is None:
        return []
    folder = Path(fallback_dir) / _safe(key)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, name in zip(images, names, strict=True):
        path = folder / (f"step{step:06d}-{_safe(name)}.png" if name else f"step{step:06d}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def new_figure(width: float = 4.0, height: float = 4.0, dpi: int = 80) -> Figure:
    """A matplotlib figure on its own Agg canvas (no pyplot, no global backend state)."""
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def figure_to_array(figure: Figure) -> np.ndarray:
    """A matplotlib figure rendered as an RGB uint8 array."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def log_figure(trainer: L.Trainer, key: str, figure: Figure, step: int,
               fallback_dir: str | Path | None = None) -> list[Path]:
    """A matplotlib figure as one image (see :func:`log_images`)."""
    return log_images(trainer, key, [figure_to_array(figure)], [""], step, captions=[key], fallback_dir=fallback_dir)


def pr_points(labels: torch.Tensor, scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of the PR curve, recall ascending (torchmetrics, every distinct score a threshold)."""
    from torchmetrics.functional.classification import binary_precision_recall_curve

    precision, recall, _ = binary_precision_recall_curve(scores.float(), labels.long())
    order = np.argsort(recall.numpy(), kind="stable")
    return recall.numpy()[order], precision.numpy()[order]


def pr_figure(recall: np.ndarray, precision: np.ndarray, ap: float, title: str = "precision-recall") -> Figure:
    """A matplotlib PR curve (from :func:`pr_points`) with the AP in the legend."""
    figure = new_figure()
    axis = figure.subplots()
    axis.step(recall, precision, where="post", label=f"AP {ap:.4f}")
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01), title=title)
    axis.legend(loc="lower left")
    figure.tight_layout()
    return figure


def log_pr_curve(trainer: L.Trainer, key: str, labels: torch.Tensor, scores: torch.Tensor, step: int,
                 fallback_dir: str | Path | None = None) -> None:
    """A PR curve of binary ``labels`` (1 defective) and ``scores``: a W&B line chart over a table of
    (recall, precision), TensorBoard's ``add_pr_curve``, and a matplotlib picture to every logger that takes
    images, or a PNG under ``fallback_dir`` if none does."""
    from torchmetrics.functional.classification import binary_average_precision

    labels, scores = labels.detach().cpu().flatten(), scores.detach().cpu().flatten()
    recall, precision = pr_points(labels, scores)
    ap = float(binary_average_precision(scores.float(), labels.long()))
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            table = wandb.Table(columns=["recall", "precision"], data=np.stack([recall, precision], 1).tolist())
            chart = wandb.plot.line(table, "recall", "precision", title=prefixed(logger, key))
            logger.log_metrics({key: chart}, step=step)  # type: ignore[dict-item]
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_pr_curve(prefixed(logger, key), labels.long(), scores.float(), step)
    log_figure(trainer, f"{key}_plot", pr_figure(recall, precision, ap), step, fallback_dir=fallback_dir)
