"""The LightningModule of the weak method: three stages inside one ``fit`` (Xu et al. 2020, IV.A)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lightning_modules.augmentation import augment, augmentation_at
from lightning_modules.detection import ImageDetectionModule
from lightning_modules.exporters import ExportTarget
from lightning_modules.method import from_config, register_method
from lightning_modules.weak.dark_restart import DarkRestart
from lightning_modules.weak.export import weak_export_target
from lightning_modules.weak.losses import collaborative_alpha, warmed_up_alpha, weak_loss
from lightning_modules.weak.networks import WeakDefectNet
from lightning_modules.weak.plan import BalancedPairs
from lightning_modules.weak.q_watch import QWatch
from lightning_modules.weak.stages import PARTS, Stage, StagePlan
from workflow.run_warnings import add_warning

PAPER_STAGES: list[dict] = [
    {"name": "localization", "iterations": 750, "lr": 0.1, "train": ["trunk", "lnet"], "losses": ["weak"],
     "alpha": "collaborative"},
    {"name": "decision", "iterations": 1200, "lr": 0.01, "lr_drops": {600: 0.001}, "train": ["dnet"],
     "losses": ["bce"]},
    {"name": "joint", "iterations": 300, "lr": 0.001, "train": ["trunk", "lnet", "dnet"], "losses": ["bce", "weak"]},
]


#: the smallest side the network takes at native size (three 2x2 max-pools in the shared layers)
WEAK_MIN_SIDE = 8


@register_method("weak")
class WeakDetectionModule(ImageDetectionModule):
    """Trains :class:`WeakDefectNet` from image-level labels only; tests image and pixel metrics.

    One training batch is one iteration of the paper: defective and defect-free images together, one
    optimizer step. This is how the paper's "batch 1, defective and defect-free alternately" is read here:
    Eq. 5 adds ``L_neg`` of a defect-free image and ``L_pos`` of a defective one into one loss, which needs
    both in the step (one image per step would leave one of the two terms empty). Batch normalization then
    sees the pair's two images. The stage at global step ``s`` (see :class:`StagePlan`) decides which parts train
    (the others are frozen: no gradient, batch-norm statistics fixed), the losses, and the learning rate
    (a per-step LambdaLR over the optimizer from the ``optimizer`` config group, whose ``lr`` over
    ``lr_reference`` scales the stages' rates: :attr:`lr_scale`).

    Testing, pooling and prediction are those of every image-level detection method
    (:class:`~lightning_modules.detection.ImageDetectionModule`).

    Under DDP (``trainer=ddp``, ``W`` ranks) an iteration of the plan is one optimizer step with one batch
    per rank: ``W`` different balanced pairs per step (as ``model.training_plan.pairs_per_batch=W`` in one
    process), for the plan's number of iterations; with ``sync_batchnorm`` the batch-norm statistics span all
    ``2W`` images.
    Test scores, the training-image threshold and the pixel metrics are gathered over all ranks, each
    image once, so that every rank's :attr:`fold_result` is what one process would compute.

    Args:
        net: the network, or its config (``_target_``: built here, and saved in the hyper-parameters).
        optimizer: a partial optimizer or its config (``_partial_: true`` in the optimizer config); the stage's
            learning rate times :attr:`lr_scale` replaces its lr. ``None``: inference only.
        lr_reference: the optimizer lr the stages' rates are written for (the paper's SGD, 0.1).
        stages: the stage plan (defaults to the paper's three stages).
        alpha_init, alpha_every: Eq. 6's alpha_init and n.
        alpha_warmup, alpha_warmup_start: not in the paper: over this fraction of a collaborative (Eq. 6) stage's
            iterations, alpha ramps linearly from ``alpha_warmup_start`` to Eq. 6's value, so that LNet does not go
            dark before it learns which images to light (:func:`~lightning_modules.weak.losses.warmed_up_alpha`);
            0 = the paper.
        dark_restarts, dark_restart_lr_factor: not in the paper: a first weak stage (stage 1) whose last tenth
            ends dark (mean Q on the defective training images < 0.05) is run again from the weights it started
            from at ``dark_restart_lr_factor`` times its rates, up to ``dark_restarts`` times
            (:mod:`lightning_modules.weak.dark_restart`); 0 = never (the paper).
        rerun_unranked: not in the paper: a stage 1 that ends lit but does not rank its training images (the
            defective images' Q above the defect-free ones' in no more of its last tenth's batches than chance,
            :meth:`QWatch.is_unranked`) is rerun as a dark one is (within the same ``dark_restarts``).
        rotate: random rotation by 0/90/180/270 degrees per batch (the paper's ablation).
        flip: random horizontal and vertical flips per batch (not in the paper).
        cache_frozen: while trunk and LNet are frozen, compute their outputs once per training image (and
            augmentation), keeping at most ``cache_frozen_max_gib`` of them; the rest are computed at every step.
        pool_clean_score: before pooling the folds, each fold's scores are shifted (in logit) so that the median
            score of its defect-free *training* images is this (:mod:`metrics.calibration`); ``None``
            pools the raw scores (as does a fold without defect-free training images). Per-fold metrics use the
            raw scores (a shift does not change their order).
        heatmap_dir: where test heat-map pictures go, under the trainer's ``default_root_dir`` (all
            defective test images, ``max_clean_pictures`` defect-free ones); ``None`` saves none.
    """

    min_side = WEAK_MIN_SIDE

    def __init__(
        self,
        net: WeakDefectNet | Mapping,
        optimizer: Callable[..., torch.optim.Optimizer] | Mapping | None = None,
        stages: Sequence[Mapping] | None = None,
        alpha_init: float = 8.0,
        alpha_every: int = 30,
        rotate: bool = False,
        flip: bool = False,
        cache_frozen: bool = True,
        cache_frozen_max_gib: float = 2.0,
        heatmap_dir: str | None = None,
        max_clean_pictures: int = 4,
        pixel_thresholds: int = 200,
        lr_reference: float = 0.1,
        pool_clean_score: float | None = 0.01,
        training_plan: BalancedPairs | Mapping | None = None,
        alpha_warmup: float = 0.0,
        alpha_warmup_start: float = 1.0,
        dark_restarts: int = 0,
        dark_restart_lr_factor: float = 0.1,
        rerun_unranked: bool = False,
    ) -> None:
        super().__init__()
        self.save_config_hyperparameters()
        self.net: WeakDefectNet = from_config(net)
        self.optimizer_factory = from_config(optimizer)
        self.training_plan = from_config(training_plan) if training_plan is not None else BalancedPairs()
        self.plan = StagePlan(stages if stages is not None else PAPER_STAGES)
        self._frozen_cache: dict[tuple[int, tuple], tuple[torch.Tensor, torch.Tensor]] = {}
        self._frozen_bytes = 0
        self._cache_stage = -1
        # Q over the current weak stage's last tenth; stage 1's summary (stage1_q_defective/clean in the result)
        self._q_watch = QWatch()
        self.stage1_q: dict[str, float] = {}
        self._base_plan = self.plan
        # the first weak stage of the configured plan (stage 1); None where no stage has the weak loss
        self._stage1_first = next((i for i, s in enumerate(self.plan.active) if "weak" in s.losses), None)
        self._dark_restart = DarkRestart(dark_restarts, dark_restart_lr_factor)
        self._restart_pending = False
        self.fold_result: dict[str, Any] = {}
        self._reset_test_metrics()

    @property
    def max_steps(self) -> int:
        """Optimizer steps of the whole plan: the trainer's ``max_steps``."""
        return self.plan.total

    @property
    def _stage1_index(self) -> int | None:
        """Stage 1's current attempt in :attr:`plan`: each rerun is inserted right after the attempt before."""
        return None if self._stage1_first is None else self._stage1_first + self._dark_restart.done

    @property
    def lr_scale(self) -> float:
        """The stages' learning rates are the paper's, for SGD at ``lr_reference`` (0.1); another optimizer
        config scales them by its own ``lr`` over that (Adam at 1e-3: stage rates x 0.01). SGD at 0.1: x 1."""
        configured = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        return float(configured) / self.hparams.lr_reference if configured else 1.0

    # -- training -------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(params=self.net.parameters(), lr=1.0)
        scale = self.lr_scale
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: scale * self.plan.lr_at(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _apply_stage(self, trainable: Sequence[str]) -> None:
        for part in PARTS:
            module = getattr(self.net, part)
            module.train(part in trainable)
            module.requires_grad_(part in trainable)

    def alpha_at(self, stage_index: int, local_step: int) -> float:
        stage = self.plan.active[stage_index]
        if stage.alpha == "collaborative":
            alpha = collaborative_alpha(local_step, stage.iterations, self.hparams.alpha_init, self.hparams.alpha_every)
            warmup = round(self.hparams.alpha_warmup * stage.iterations)
            return warmed_up_alpha(alpha, local_step, warmup, self.hparams.alpha_warmup_start)
        return self.hparams.alpha_init

    def _watch_heatmap(self, heatmap: torch.Tensor, labels: torch.Tensor, stage: Stage, stage_index: int,
                       local: int) -> dict:
        """Q (the mean heat map, Eq. 3-4) of the batch's defective and defect-free images, for the logs; at the
        end of a weak-loss stage, its last tenth's mean Q (stage 1's goes into the fold's result as
        ``stage1_q_defective``/``stage1_q_clean``, averaged over the ranks) and, where LNet has gone dark on the
        defective images (:mod:`lightning_modules.weak.q_watch`; seen on real KolektorSDD: test AP 0.27), a rerun of
        stage 1 (:mod:`lightning_modules.weak.dark_restart`) or a warning; likewise where stage 1 ends lit but does
        not rank the defective training images above the defect-free ones (``rerun_unranked``)."""
        logs = self._q_watch.update(heatmap.detach().flatten(1).mean(dim=1), labels, local, stage.iterations)
        if local != stage.iterations - 1:
            return logs
        summary = self._q_watch.summary()
        if stage_index == self._stage1_index:
            for key, op in (("q_defective", "mean"), ("q_clean", "mean"), ("ranked", "sum"), ("pairs", "sum")):
                value = torch.tensor(float(summary[key]), device=self.device)  # one decision on every rank
                summary[key] = float(self.trainer.strategy.reduce(value, reduce_op=op))
            self.stage1_q = summary
        dark = QWatch.is_dark(summary)
        # stage 1's test only (see q_watch)
        unranked = not dark and stage_index == self._stage1_index and QWatch.is_unranked(summary)
        if dark:
            failed = (f"stage {stage.name!r} ended with LNet's heat map dark on the defective training images "
                      f"(mean Q {summary['q_defective']:.4f} over its last {summary['steps']} steps; the weak loss "
                      "wants 0.5)")
        elif unranked:
            failed = (f"stage {stage.name!r} ended without telling the defective training images from the defect-free "
                      f"ones (their Q the higher in {summary['ranked']:.0f} of its last {summary['pairs']:.0f} "
                      "batches: chance)")
        else:
            failed = ""
        rerun = dark or (unranked and self.hparams.rerun_unranked)  # wanted(False) drops the kept starting weights
        if stage_index == self._stage1_index and self._dark_restart.wanted(rerun):
            self._restart_pending = True  # done after this step's optimizer update (on_train_batch_end)
            add_warning(self, f"{failed}: it is run again from its starting weights at "
                        f"{self._dark_restart.lr_factor:g}x its learning rates (model.dark_restarts)")
        elif failed:
            add_warning(self, f"{failed}: LNet's heat maps will not point at the defects and the decision net will "
                        "learn little. Try another seed, or model.dark_restarts (reruns at a lower rate).")
        return logs

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._restart_pending:
            self._rerun_stage1()

    def on_train_start(self) -> None:
        if self._restart_pending:  # resumed from a checkpoint saved as a dark stage 1 ended, before its rerun
            self._rerun_stage1()

    def _rerun_stage1(self) -> None:
        self._restart_pending = False
        self.plan = self._dark_restart.restart(self, self.plan, self._stage1_index)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["stage1_q"] = dict(self.stage1_q)
        checkpoint["dark_restart"] = self._dark_restart.state(self._restart_pending)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.stage1_q = dict(checkpoint.get("stage1_q") or {})
        self._restart_pending = self._dark_restart.load_state(checkpoint.get("dark_restart"))
        if self._dark_restart.done:
            self.plan = self._dark_restart.replay(self._base_plan, self._stage1_first)
            if self._trainer is not None:  # resuming a fit: its step budget includes the reruns
                self._trainer.fit_loop.epoch_loop.max_steps = self.plan.total

    def extra_fold_metrics(self) -> dict[str, float]:
        """Stage 1's mean Q on the defective and defect-free training images over its last tenth, and the share of
        those batches where the defective images' Q was the higher (chance: 0.5)."""
        pairs = self.stage1_q.get("pairs", 0)
        return {"stage1_q_defective": self.stage1_q.get("q_defective", float("nan")),
                "stage1_q_clean": self.stage1_q.get("q_clean", float("nan")),
                "stage1_ranked_share": self.stage1_q["ranked"] / pairs if pairs else float("nan"),
                "stage1_restarts": float(self._dark_restart.done)}

    def _localize(self, x: torch.Tensor, indices: torch.Tensor, k: tuple, frozen: bool,
                  stage_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not (frozen and self.hparams.cache_frozen):
            return self.net.localize(x)
        if stage_index != self._cache_stage:
            self._frozen_cache.clear()
            self._frozen_bytes = 0
            self._cache_stage = stage_index
        keys = [(int(i), k) for i in indices]
        outputs = {key: self._frozen_cache[key] for key in keys if key in self._frozen_cache}
        missing = [j for j, key in enumerate(keys) if key not in outputs]
        if missing:
            with torch.no_grad():
                feats, heat = self.net.localize(x[missing])
            for j, f, h in zip(missing, feats, heat, strict=True):
                outputs[keys[j]] = (f, h)
                self._keep_frozen(keys[j], f, h)
        feats = torch.stack([outputs[key][0] for key in keys])
        heat = torch.stack([outputs[key][1] for key in keys])
        return feats, heat

    def _keep_frozen(self, key: tuple[int, tuple], features: torch.Tensor, heatmap: torch.Tensor) -> None:
        """Keep one image's frozen outputs while the cache is under ``cache_frozen_max_gib`` (fill until full)."""
        size = features.numel() * features.element_size() + heatmap.numel() * heatmap.element_size()
        if self._frozen_bytes + size <= self.hparams.cache_frozen_max_gib * 2**30:
            self._frozen_cache[key] = (features, heatmap)
            self._frozen_bytes += size

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = self.global_step
        stage_index, stage, local = self.plan.locate(step)
        if stage_index == self._stage1_index and local == 0:
            self._dark_restart.remember(self.net)  # stage 1's starting weights, for a rerun if it ends dark
        self._apply_stage(stage.train)
        k = augmentation_at(step, self.hparams.rotate, self.hparams.flip)
        x = augment(batch["image"], *k)
        labels = batch["label"].float()  # image-level labels: the only supervision
        frozen = not ({"trunk", "lnet"} & set(stage.train))
        features, heatmap = self._localize(x, batch["index"], k, frozen, stage_index)
        loss = x.new_zeros(())
        logs: dict[str, Any] = {"stage": float(stage_index + 1)}
        if "weak" in stage.losses:
            alpha = self.alpha_at(stage_index, local)
            lw = weak_loss(heatmap, labels, alpha)
            loss = loss + lw
            logs.update({"alpha": alpha, "loss_weak": lw.detach()})
            logs.update(self._watch_heatmap(heatmap, labels, stage, stage_index, local))
        if "bce" in stage.losses:
            if "dnet" not in stage.train:
                features = features.detach()
            logits = self.net.dnet(features, heatmap)
            lb = F.binary_cross_entropy_with_logits(logits, labels)
            loss = loss + lb
            logs["loss_bce"] = lb.detach()
        logs["loss"] = loss.detach()
        logs[f"{stage.name}/loss"] = logs["loss"]  # per-stage curves (train/localization/loss, ...)
        self.log_dict({f"train/{k_}": v for k_, v in logs.items()}, prog_bar=False, on_step=True, on_epoch=False,
                      batch_size=x.shape[0])
        return loss

    # -- inference ------------------------------------------------------------------------------
    def export_target(self) -> ExportTarget:
        """:class:`WeakInference`: ``image`` in, ``heatmap``, ``probability`` and ``logit`` out."""
        return weak_export_target(self.net)
