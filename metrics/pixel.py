"""Pixel AUROC and AP of heat maps against masks, kept per image so that DDP counts every image once."""

from __future__ import annotations

import importlib
import math

import torch
from torchmetrics import Metric

from workflow.gathering import cat_state, gather_unique

# torchmetrics' own input format and compute functions, so that the figures equal BinaryAUROC(thresholds=T) and
# BinaryAveragePrecision(thresholds=T) on the same pixels (the module paths are shadowed by function names)
_curve = importlib.import_module("torchmetrics.functional.classification.precision_recall_curve")
_auroc = importlib.import_module("torchmetrics.functional.classification.auroc")
_ap = importlib.import_module("torchmetrics.functional.classification.average_precision")


def binned_table(preds: torch.Tensor, target: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The ``(T, 2, 2)`` confusion tables ``[threshold, target, preds >= threshold]`` of torchmetrics' binned curves,
    by one ``searchsorted`` (O(P log T), where torchmetrics compares every pixel with every threshold)."""
    above = torch.searchsorted(thresholds, preds, right=True)  # thresholds <= each pred
    n = len(thresholds)
    table = torch.zeros(n, 2, 2, dtype=torch.long, device=preds.device)
    for label in (0, 1):
        counts = torch.bincount(above[target == label], minlength=n + 1)
        at_least = counts.flip(0).cumsum(0).flip(0)[1:]  # preds >= thresholds[t]
        table[:, label, 1] = at_least
        table[:, label, 0] = counts.sum() - at_least
    return table


class PixelMetrics(Metric):
    """Binned (``thresholds`` evenly spaced in [0, 1]) pixel AUROC and AP over all test images given to it (the
    weak module gives those whose mask is known), and how many images that was (``pixel_images``); NaN where
    they hold no defect pixel.

    The state is one ``(thresholds, 2, 2)`` confusion table per image with the image's id: under DDP the
    tables of all ranks are gathered, an image that the DistributedSampler repeated to pad the last round is
    kept once, and the tables are summed. A pooled confusion table of all pixels would count a repeated
    image twice. Heat-map values are probabilities in [0, 1].
    """

    full_state_update = False

    def __init__(self, thresholds: int = 200, **kwargs) -> None:
        kwargs.setdefault("sync_on_compute", False)  # compute() gathers by id itself
        super().__init__(**kwargs)
        self.register_buffer("thresholds", torch.linspace(0, 1, thresholds), persistent=False)
        self.add_state("tables", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")

    def update(self, heatmaps: torch.Tensor, masks: torch.Tensor, ids: torch.Tensor) -> None:
        """``heatmaps`` and ``masks``: one image per row (any trailing shape, the same for both)."""
        for heat, mask in zip(heatmaps.detach(), masks.detach(), strict=True):
            preds, target, _ = _curve._binary_precision_recall_curve_format(heat.flatten().float(),
                                                                              mask.flatten().long(), self.thresholds)
            self.tables.append(binned_table(preds, target, self.thresholds)[None])
        self.ids.append(ids.detach().long().flatten())

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        n = len(self.thresholds)
        tables = cat_state(self.tables, torch.long, self.thresholds.device, (n, 2, 2))
        ids = cat_state(self.ids, torch.long, self.thresholds.device)
        _, tables = gather_unique(ids, tables)
        table = tables.sum(0)
        if not int(table[0, 1].sum()):  # no defect pixel with a known mask: nothing to rank against
            return {"pixel_auroc": math.nan, "pixel_ap": math.nan, "pixel_images": len(tables)}
        return {"pixel_auroc": float(_auroc._binary_auroc_compute(table, self.thresholds)),
                "pixel_ap": float(_ap._binary_average_precision_compute(table, self.thresholds)),
                "pixel_images": len(tables)}
