"""The precision-recall curve of a detector's test images at the end of testing."""

from __future__ import annotations

import lightning as L
import torch

from workflow.media import log_pr_curve


class PRCurve(L.Callback):
    """At the end of ``trainer.test``, the PR curve of the test images' scores against their image-level labels
    (``pl_module.fold_result["per_image"]``: ``label`` and ``score``, as the weak method keeps them): a W&B line
    chart and TensorBoard PR curve, plus a picture with the AP to every logger taking images (a PNG under the
    fold folder when none does). Logged under ``key`` with the fold prefix (``fold0-test/pr_curve``).
    """

    def __init__(self, key: str = "test/pr_curve") -> None:
        self.key = key

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_image = getattr(pl_module, "fold_result", {}).get("per_image") or {}
        if not trainer.is_global_zero or "label" not in per_image or "score" not in per_image:
            return
        labels, scores = torch.as_tensor(per_image["label"]), torch.as_tensor(per_image["score"])
        if labels.numel() == 0:
            return
        log_pr_curve(trainer, self.key, labels, scores, trainer.global_step, fallback_dir=trainer.default_root_dir)
