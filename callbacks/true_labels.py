"""A diagnostic for the clustering method: train its classifier on the true classes instead of pseudo-labels."""

from __future__ import annotations

import lightning as L


class TrueLabels(L.Callback):
    """Set the training images' true classes (``train_set.targets``) as their pseudo-labels, once, at the start.

    Used in place of :class:`~callbacks.PseudoLabelReassigner` (``callbacks=true_labels``) it gives a preset's
    supervised ceiling: what its views, backbone, optimizer and steps reach when every label is right. The clustering
    method cannot be expected to beat it with the same budget; it is not part of the method, and it needs every
    training image's class.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        targets = getattr(getattr(datamodule, "train_set", None), "targets", None)
        if targets is None or len(targets) == 0 or bool((targets < 0).any()):
            raise ValueError("callbacks=true_labels needs the true class of every training image; this data has "
                             "images without one")
        num_clusters = pl_module.hparams.num_clusters
        if int(targets.max()) >= num_clusters:
            raise ValueError(f"the data has {int(targets.max()) + 1} classes but the head {num_clusters} outputs "
                             f"(model.num_clusters)")
        pl_module.training_plan.set_pseudo_labels(targets.clone())
