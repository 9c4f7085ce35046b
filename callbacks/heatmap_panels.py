"""LNet heat maps of a fixed set of test images as training goes (Xu et al. 2020, Figure 6, live)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from workflow.media import log_images
from workflow.pictures import heatmap_panel


@dataclass
class PanelImages:
    """The fixed images: (K,C,H,W) in [0,1], their masks (None where a dataset has none), labels and names."""

    images: torch.Tensor
    masks: list[torch.Tensor | None]
    labels: list[int]
    names: list[str]


def pick_images(dataset, num_images: int, num_defective: int | None = None) -> PanelImages:
    """The first ``num_defective`` (default: up to ``num_images``) defective images of ``dataset`` in order,
    then defect-free ones up to ``num_images``; ``dataset`` items are dicts with image, mask, label, name."""
    if hasattr(dataset, "labels"):  # a SampleDataset: no decoding needed to know the labels
        values = dataset.labels.tolist()
    else:
        values = [float(dataset[i]["label"]) for i in range(len(dataset))]
    labels = [int(v >= 0.5) for v in values]
    defective = [i for i, v in enumerate(labels) if v == 1]
    clean = [i for i, v in enumerate(labels) if v == 0]
    wanted = num_images if num_defective is None else min(num_defective, num_images)
    chosen = defective[:wanted]
    chosen += clean[: num_images - len(chosen)]
    items = [dataset[i] for i in chosen]
    if not items:
        return PanelImages(torch.empty(0), [], [], [])
    return PanelImages(images=torch.stack([it["image"] for it in items]), masks=[it.get("mask") for it in items],
                       labels=[labels[i] for i in chosen], names=[str(it["name"]) for it in items])


class HeatmapPanels(L.Callback):
    """Every ``every_n_steps`` optimizer steps, and at the end of training, the heat maps of K fixed test
    images as panels [input | ground-truth mask | heat-map overlay], logged to every logger that takes images
    (W&B: one captioned image list under ``key``; TensorBoard: ``key/<image name>``), or written as PNGs under
    ``<fold dir>/<key>/`` when none does.

    The images are the datamodule's test images, defective first (``num_defective`` of them, default as many
    as fit), then defect-free ones. The network runs in evaluation mode without gradients, inside a forked RNG,
    and every submodule's training flag is put back afterwards (the weak method trains some parts while
    others stay frozen in eval mode), so training, its random stream and batch-norm statistics are untouched.

    Works with a module whose ``net(images)`` returns ``(heatmap, logits)`` (:class:`WeakDefectNet`); the
    caption shows the DNet score and, for a staged module, the stage just trained.

    Args:
        every_n_steps: log after every this many optimizer steps (0: only at the end of training).
        num_images: K.
        num_defective: at most this many defective images among the K (None: as many as there are).
        key: the image key (and the PNG folder name).
    """

    def __init__(self, every_n_steps: int = 100, num_images: int = 4, num_defective: int | None = None,
                 key: str = "heatmaps_live") -> None:
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.num_defective = num_defective
        self.key = key
        self.panel_images: PanelImages | None = None
        self._last_step = -1  # the step last rendered (steps only grow)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = -1
        self.panel_images = None
        if not trainer.is_global_zero:
            return
        if not callable(getattr(pl_module, "net", None)):
            rank_zero_warn(f"HeatmapPanels: {type(pl_module).__name__} has no `net` returning heat maps; no panels")
            return
        dataset = getattr(trainer.datamodule, "test_set", None) if trainer.datamodule is not None else None
        if dataset is None or len(dataset) == 0:
            rank_zero_warn("HeatmapPanels: the datamodule has no test_set; no panels")
            return
        self.panel_images = pick_images(dataset, self.num_images, self.num_defective)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.log_panels(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self.log_panels(trainer, pl_module)

    @torch.no_grad()
    def heatmaps(self, pl_module: L.LightningModule, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heat maps, scores) of ``images`` in evaluation mode; modes, gradients and RNG state left as found."""
        modes = {module: module.training for module in pl_module.modules()}
        device = pl_module.device
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            pl_module.eval()
            try:
                heatmap, logits = pl_module.net(images.to(device))
            finally:
                for module, mode in modes.items():
                    module.training = mode
        return heatmap.float().cpu(), torch.sigmoid(logits.float()).cpu()

    def caption(self, pl_module: L.LightningModule, step: int, name: str, label: int, score: float) -> str:
        text = f"{name} | {'defective' if label else 'defect-free'} | score {score:.3f} | step {step}"
        plan = getattr(pl_module, "plan", None)
        if plan is not None and step > 0:
            text += f" | stage {plan.locate(step - 1)[1].name}"
        return text

    def log_panels(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[Path]:
        """Render and log the panels at the current step (rank 0 only); PNG paths when written as files."""
        step = trainer.global_step
        self._last_step = step
        chosen = self.panel_images
        if not trainer.is_global_zero or chosen is None or not chosen.names:
            return []
        heatmaps, scores = self.heatmaps(pl_module, chosen.images)
        panels = [heatmap_panel(image, mask, heat) for image, mask, heat in
                  zip(chosen.images, chosen.masks, heatmaps, strict=True)]
        captions = [self.caption(pl_module, step, name, label, float(score)) for name, label, score in
                    zip(chosen.names, chosen.labels, scores, strict=True)]
        return log_images(trainer, self.key, panels, chosen.names, step, captions=captions,
                          fallback_dir=trainer.default_root_dir)
