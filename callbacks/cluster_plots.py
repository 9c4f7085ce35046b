"""Pictures and histories of the clustering method: cluster sizes at each reassignment, the test confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from callbacks.pseudo_labels import PseudoLabelReassigner
from workflow.media import log_figure, new_figure


def size_history_figure(history: Sequence[dict], title: str = "cluster sizes at each reassignment"):
    """Stacked bars, one per reassignment (x: its step), of the cluster sizes sorted largest first."""
    figure = new_figure(width=max(4.0, 0.4 * len(history) + 2.0), height=3.5)
    axis = figure.subplots()
    sizes = np.array([sorted(r["sizes"], reverse=True) for r in history], dtype=float)
    positions = np.arange(len(history))
    bottom = np.zeros(len(history))
    for rank in range(sizes.shape[1]):
        axis.bar(positions, sizes[:, rank], bottom=bottom, width=0.8)
        bottom += sizes[:, rank]
    axis.set_xticks(positions, [str(r["step"]) for r in history], rotation=90 if len(history) > 12 else 0)
    axis.set(xlabel="step", ylabel="images (largest cluster at the bottom)", title=title)
    figure.tight_layout()
    return figure


def confusion_figure(confusion: Sequence[Sequence[int]], class_names: Sequence[str] | None = None,
                     title: str = "test confusion matrix"):
    """A confusion matrix (rows: true class, columns: predicted class) with the counts written in the cells."""
    matrix = np.asarray(confusion)
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None and len(class_names) == n else [str(i) for i in range(n)]
    figure = new_figure(width=max(4.0, 1.5 + 0.6 * n), height=max(4.0, 1.5 + 0.6 * n))
    axis = figure.subplots()
    axis.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(col, row, str(count), ha="center", va="center", fontsize=8,
                  color="white" if count > matrix.max() / 2 else "black")
    axis.set_xticks(range(n), names, rotation=90)
    axis.set_yticks(range(n), names)
    axis.set(xlabel="predicted (mapped cluster)", ylabel="true class", title=title)
    figure.tight_layout()
    return figure


class ClusteringPlots(L.Callback):
    """Logs for the clustering method (Bai et al. 2024), next to :class:`PseudoLabelReassigner` in the callbacks:

    * at the end of training, a picture of the cluster sizes at each reassignment (stacked bars, largest
      first; :class:`PseudoLabelReassigner` logs the same sizes as metrics ``cluster/size_rank<i>``);
    * at the end of testing, the confusion matrix of ``fold_result["metrics"]["confusion"]`` (true class x
      cluster mapped to a class) as a picture, and for W&B also as its confusion-matrix chart.

    Pictures go to every logger that takes images, else to PNGs under ``<fold dir>/<key>/``.
    """

    def __init__(self, size_history: bool = True, confusion: bool = True) -> None:
        self.size_history = size_history
        self.confusion = confusion

    @staticmethod
    def kmeans(trainer: L.Trainer) -> PseudoLabelReassigner | None:
        return next((c for c in trainer.callbacks if isinstance(c, PseudoLabelReassigner)), None)  # type: ignore[attr-defined]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        kmeans = self.kmeans(trainer)
        if kmeans is None or not kmeans.history or not self.size_history or not trainer.is_global_zero:
            return
        log_figure(trainer, "cluster/size_history", size_history_figure(kmeans.history), trainer.global_step,
                   fallback_dir=trainer.default_root_dir)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = getattr(pl_module, "fold_result", {}) or {}
        confusion = (result.get("metrics") or {}).get("confusion")
        if not self.confusion or confusion is None or not trainer.is_global_zero:
            return
        names = getattr(trainer.datamodule, "classes", None) if trainer.datamodule is not None else None
        step = trainer.global_step
        log_figure(trainer, "test/confusion", confusion_figure(confusion, names), step,
                   fallback_dir=trainer.default_root_dir)
        self._wandb_confusion(trainer, result, names)

    @staticmethod
    def _wandb_confusion(trainer: L.Trainer, result: dict, names: Sequence[str] | None) -> None:
        """W&B's confusion-matrix chart from the per-image clusters mapped to classes."""
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        per_image, mapping = result.get("per_image") or {}, (result.get("metrics") or {}).get("mapping")
        if not loggers or mapping is None or "cluster" not in per_image or "target" not in per_image:
            return
        import wandb

        targets = torch.as_tensor(per_image["target"]).tolist()
        predicted = [mapping[int(c)] for c in torch.as_tensor(per_image["cluster"]).tolist()]
        n = len(result["metrics"]["confusion"])
        class_names = list(names) if names is not None and len(names) == n else [str(i) for i in range(n)]
        for logger in loggers:
            chart = wandb.plot.confusion_matrix(y_true=targets, preds=predicted, class_names=class_names)
            logger.log_metrics({"test/confusion_chart": chart}, step=trainer.global_step)  # type: ignore[dict-item]
