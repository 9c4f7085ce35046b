"""The LightningModule of the clustering method: a timm backbone and a classifier on k-means pseudo-labels.

Bai et al. (2024), 3.2: features of the whole training set are clustered every k steps (by the
:class:`callbacks.PseudoLabelReassigner` callback, which calls :meth:`ClusteringModule.extract_features` and
:meth:`ClusteringModule.reset_head`); between reassignments the backbone and the head learn to predict
the pseudo-label of every view of an image with cross-entropy over the K pseudo-classes. True labels are
used only at test time: the head's cluster of each test image against its class (NMI, ACC, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clustering.health import empty_test_clusters_warning
from datamodules.views import BatchedMultiCropViews
from lightning_modules.cluster.backbone import backbone_from_config
from lightning_modules.cluster.plan import PseudoLabelViews
from lightning_modules.method import DefectMethod, from_config, register_method
from metrics.clustering import ClusteringMetrics, cluster_sizes, pooled_summary
from workflow.errors import SettingError
from workflow.run_warnings import add_warning


@register_method("cluster")
class ClusteringModule(DefectMethod):
    """Backbone + linear head over ``num_clusters`` pseudo-classes.

    Args:
        backbone: a timm model name (``convnextv2_tiny`` is the paper's; ``convnextv2_atto`` suits a CPU), or a
            node ``{name, checkpoint_path, drop_path_rate}`` (the ``model.backbone`` config); see
            :func:`~lightning_modules.cluster.backbone.backbone_from_config`.
        checkpoint_path, drop_path_rate: used where ``backbone`` does not set them (older configs).
        num_clusters: K, the number of k-means clusters and head outputs.
        num_classes: true classes, for evaluation only (defaults to ``num_clusters``).
        defect_free_class: the true class that is defect-free, if any (enables MDR, FDR, EACC).
        optimizer: a partial optimizer, or its config from the ``optimizer`` config group; ``None``: inference only.
        warmup_steps, max_steps, min_lr_ratio: LinearLR warm-up, then CosineAnnealingLR to
            ``lr * min_lr_ratio`` at ``max_steps`` (the trainer's ``max_steps``).
        mean, std: input normalisation of the [0, 1] images.
        channels_last: keep the backbone's weights and inputs in channels-last memory order (faster convolutions
            on CPUs with oneDNN and on GPUs, most of all under ``bf16-mixed``; the numbers are the same).
        eval_scale: whole images are resized by this factor before the head classifies them (:meth:`classify`:
            testing, ``predict.py``), so that their texture appears at about the scale the head was trained on:
            a global view of ``s`` px cropped from a region of side ``c`` shows it at ``s / c`` (the train-test
            resolution discrepancy, Touvron et al. 2019, "FixRes"). 1.0: as decoded. The features k-means
            clusters are taken as decoded either way.
        training_plan: how training batches are drawn and augmented (``model.training_plan``; default: the paper's
            32 images x 2 global (200 px) + 6 local (96 px) views, made per batch).
    """

    metric_names = ("acc", "nmi", "mdr", "fdr", "eacc")
    prediction_columns = ("cluster", "probability")
    tests_training_images = False  # testing needs the test images only
    min_side = 32

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] | Mapping | None = None,
        backbone: str | Mapping[str, Any] = "convnextv2_tiny",
        num_clusters: int = 6,
        num_classes: int | None = None,
        defect_free_class: int | None = None,
        in_chans: int = 1,
        checkpoint_path: str | None = None,
        drop_path_rate: float = 0.0,
        warmup_steps: int = 100,
        max_steps: int = 2000,
        min_lr_ratio: float = 0.01,
        mean: float = 0.5,
        std: float = 0.25,
        channels_last: bool = False,
        eval_scale: float = 1.0,
        training_plan: PseudoLabelViews | Mapping | None = None,
    ) -> None:
        super().__init__()
        if eval_scale <= 0:
            raise ValueError(f"eval_scale must be > 0, got {eval_scale}")
        self.save_config_hyperparameters()
        self.optimizer_factory = from_config(optimizer)
        self.training_plan = (from_config(training_plan) if training_plan is not None
                              else PseudoLabelViews(BatchedMultiCropViews()))
        self.backbone = backbone_from_config(backbone, in_chans, checkpoint_path, drop_path_rate)
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.head = nn.Linear(self.backbone.num_features, num_clusters)
        self.fold_result: dict[str, Any] = {}
        self._reset_test_metrics()

    @property
    def max_steps(self) -> int:
        return int(self.hparams.max_steps)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.hparams.mean) / self.hparams.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pseudo-class logits."""
        return self.head(self.features(images))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Pseudo-class logits of whole images, resized by ``eval_scale`` first (bilinear, antialiased)."""
        scale = self.hparams.eval_scale
        if scale != 1.0:
            size = [max(1, round(side * scale)) for side in images.shape[-2:]]
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
        return self(images)

    def predict_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The cluster (N,) (argmax of the head, :meth:`classify`) and its softmax probability (N,)."""
        probability, cluster = torch.softmax(self.classify(images), dim=1).max(dim=1)
        return {"cluster": cluster, "probability": probability}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The method's name, and the hyper-parameters without the pretrained backbone file: it only starts
        training (the checkpoint's weights replace it), so a checkpoint rebuilds without it."""
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint.get("hyper_parameters")
        if hparams:
            hparams["checkpoint_path"] = None
            if isinstance(hparams.get("backbone"), Mapping):
                hparams["backbone"] = {**hparams["backbone"], "checkpoint_path": None}

    # -- the hooks the PseudoLabelReassigner callback uses -------------------------------------------------
    @torch.no_grad()
    def extract_features(self, loader: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (float32) and ids of every image a loader yields, in evaluation mode (then back to
        training), under the trainer's precision (``bf16-mixed``: autocast, as in training and testing)."""
        was_training = self.training
        self.eval()
        precision = self._trainer.precision_plugin.forward_context() if self._trainer is not None else nullcontext()
        feats, ids = [], []
        with precision:
            for batch in loader:
                feats.append(self.features(batch["image"].to(self.device)).float())
                ids.append(batch["index"].to(self.device))
        self.train(was_training)
        return torch.cat(feats), torch.cat(ids)

    def reset_head(self) -> None:
        """Re-initialise the classifier after a reassignment (the clusters' order is arbitrary), with its
        optimizer state (momentum, Adam moments) cleared. Under DDP rank 0's new head is broadcast: the ranks'
        random generators need not be in step (random crops draw a varying count of numbers), and DDP only
        averages gradients, so heads drawn apart would stay apart."""
        self.head.reset_parameters()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for p in self.head.parameters():
                torch.distributed.broadcast(p.data, src=0)
        if self._trainer is not None and self.trainer.optimizers:
            for optimizer in self.trainer.optimizers:
                for p in self.head.parameters():
                    optimizer.state.pop(p, None)

    # -- training -------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(params=self.parameters())
        warmup = max(1, min(self.hparams.warmup_steps, self.max_steps - 1))
        base_lr = optimizer.param_groups[0]["lr"]
        scheduler = torch.optim.lr_scheduler.SequentialLR(
            optimizer,
            [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup),
             torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.max_steps - warmup),
                                                        eta_min=base_lr * self.hparams.min_lr_ratio)],
            milestones=[warmup],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labels = batch["pseudo_label"]
        by_size: dict[tuple[int, int], list[torch.Tensor]] = {}
        for view in batch["views"]:
            by_size.setdefault(tuple(view.shape[-2:]), []).append(view)
        losses, correct, count = [], 0.0, 0
        for views in by_size.values():  # one forward pass per view size
            logits = self(torch.cat(views))
            target = labels.repeat(len(views))
            losses.append(F.cross_entropy(logits, target, reduction="sum"))
            correct += float((logits.argmax(1) == target).sum())
            count += target.numel()
        loss = torch.stack(losses).sum() / count
        self.log_dict({"train/loss": loss.detach(), "train/pseudo_acc": correct / count}, on_step=True,
                      on_epoch=False, batch_size=labels.numel())
        return loss

    # -- validation (only with held-out training images, ``data.val_fraction``) ------------------
    def clustering_metrics(self) -> ClusteringMetrics:
        """Fresh metrics of this module's clusters against the true classes (validation and testing), on its device."""
        k = self.hparams.num_clusters
        return ClusteringMetrics(k, self.hparams.num_classes or k, self.hparams.defect_free_class).to(self.device)

    def on_validation_epoch_start(self) -> None:
        self.val_metrics = self.clustering_metrics()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_metrics.update(self.classify(batch["image"]).argmax(1), batch["target"], batch["index"])

    def on_validation_epoch_end(self) -> None:
        """``val/acc`` and ``val/nmi`` of the head's clusters on the held-out training images (each validation
        maps clusters to classes by its own Hungarian assignment, as testing does): what settings are chosen on,
        never the test fold. The last check's values go into the fold's result (``val_acc``, ``val_nmi``)."""
        metrics = self.val_metrics.compute()
        if "acc" not in metrics:
            raise SettingError("validation scores the held-out images against their classes, and these images have "
                               "none (not sorted into class folders): set data.val_fraction=0")
        self.record_validation({k: float(metrics[k]) for k in ("acc", "nmi")})

    # -- testing --------------------------------------------------------------------------------
    def _reset_test_metrics(self) -> None:
        self.test_metrics = self.clustering_metrics()
        self._test_seconds, self._test_images = 0.0, 0

    def on_test_epoch_start(self) -> None:
        self._reset_test_metrics()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        clusters = self.classify(batch["image"]).argmax(1)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._test_seconds += time.perf_counter() - start
        self._test_images += batch["image"].shape[0]
        self.test_metrics.update(clusters, batch["target"], batch["index"])

    def on_test_epoch_end(self) -> None:
        metrics = self.test_metrics.compute()
        metrics["ms_per_image"] = 1000 * self._test_seconds / max(1, self._test_images)
        metrics.update(getattr(self, "training_summary", {}))  # what the pseudo-label callback chose, if anything
        metrics.update(getattr(self, "last_validation", {}))
        clusters, targets, ids = self.test_metrics.gathered()
        collapsed = empty_test_clusters_warning(cluster_sizes(clusters, self.hparams.num_clusters)["cluster_sizes"])
        if collapsed:
            add_warning(self, collapsed)
        self.fold_result = {"metrics": metrics, "classes": self.classes(),
                            "per_image": {"ids": ids.cpu(), "target": targets.cpu(), "cluster": clusters.cpu()}}
        self.log_dict({f"test/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)},
                      rank_zero_only=True)

    def classes(self) -> dict[str, int | None]:
        """K, the true classes and the defect-free class: what pooling the folds needs (in each fold result)."""
        k = self.hparams.num_clusters
        return {"num_clusters": k, "num_classes": self.hparams.num_classes or k,
                "defect_free_class": self.hparams.defect_free_class}

    @classmethod
    def pool(cls, fold_results: Sequence[Mapping[str, Any]]) -> dict:
        """Pooled over folds (:func:`metrics.clustering.pooled_summary`: each fold's clusters mapped by its own
        Hungarian assignment, ACC on all test images together, NMI the mean over folds); ms per image the mean."""
        folds = [(r["per_image"]["cluster"], r["per_image"]["target"]) for r in fold_results]
        pooled = pooled_summary(folds, **fold_results[0]["classes"])
        pooled["ms_per_image"] = sum(r["metrics"]["ms_per_image"] for r in fold_results) / len(fold_results)
        return pooled
