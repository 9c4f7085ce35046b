"""Reassign pseudo-labels by k-means on the whole training set every k steps (Bai et al. 2024, 3.2.2)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.functional.clustering import normalized_mutual_info_score
from tqdm.auto import tqdm

from callbacks.averaged_weights import averaged_weights, restart_average
from clustering.alignment import align_to, truth_scores
from clustering.backends import cluster
from clustering.descriptors import texture_descriptor
from clustering.health import clustering_warnings, looks_merged
from clustering.stability import agreement_by_weight, mean_agreement, pick_weight
from workflow.gathering import gather_unique
from workflow.run_warnings import add_warning


def describing(batches: Iterable[dict], descriptor: Callable[[torch.Tensor], torch.Tensor], out: list[torch.Tensor],
               device: torch.device) -> Iterator[dict]:
    """``batches`` passed on unchanged, each one's images described by ``descriptor`` (in float32, outside any
    autocast) into ``out`` on the way."""
    for batch in batches:
        images = batch["image"].to(device)
        with torch.autocast(images.device.type, enabled=False):
            out.append(descriptor(images))
        yield batch


class PseudoLabelReassigner(L.Callback):
    """Every ``every_n_steps`` training steps (and before the first): extract the features of the whole
    training set with the evaluation transform, cluster them into ``num_clusters`` groups, hand the new
    assignment to the module's training plan (``training_plan.set_pseudo_labels``) and re-initialise the
    classifier head (``reset_head``), as the paper (and DeepCluster) do: k-means numbers its clusters arbitrarily.
    With ``align_to_previous`` the new clusters are instead renamed to best match the previous assignment
    (:func:`align_to`) and the head keeps learning: it need not relearn from nothing every ``every_n_steps``
    (not in the paper; a help when the steps between reassignments are few, as on a CPU).

    Under DDP every rank extracts the features of its share of the images; they are gathered, rank 0
    clusters once, and the assignment is broadcast, so every rank trains on the same pseudo-labels.
    No reassignment happens in the last ``every_n_steps // 2`` steps, nor after ``freeze_after`` (a fraction
    of the trainer's ``max_steps``), so the final head has time to learn a fixed assignment.

    With a weight-averaging callback in the trainer (``callbacks.ema``: Lightning's ``EMAWeightAveraging``) and
    ``features_from_average``, the features come from the averaged weights (a mean teacher's, which move less
    from one reassignment to the next than the weights being trained); not in the paper.

    Logged each time, to every logger at the reassignment's step: ``cluster/nmi_to_previous`` (NMI between
    consecutive assignments), ``cluster/min_size``, ``cluster/max_size``, the sizes sorted largest first
    (``cluster/size_rank<i>``: cluster ids change meaning between reassignments, ranks do not) and
    ``cluster/seconds``; the records are kept in :attr:`history` (a list of dicts) for plots.
    Where the training images have true classes (``train_set.targets``, -1 where unknown), also
    ``cluster/nmi_to_truth`` and ``cluster/acc_to_truth`` (Hungarian mapping) of the new pseudo-labels: a
    diagnostic of whether feature learning helps. The true classes are only read for these two numbers;
    they never reach the pseudo-labels or the loss.

    Args:
        backend: a name in :data:`clustering.backends.KMEANS_BACKENDS` ("faiss", "sklearn_minibatch" or
            "sklearn_gmm").
        pca_dim, whiten, l2_normalize: feature preprocessing before k-means.
        niter, nredo, seed: k-means iterations, restarts and seed; ``niter=None`` leaves each backend its own
            default (faiss 20; MiniBatchKMeans 100, scikit-learn's ``max_iter``).
        freeze_after: no reassignment after this fraction of ``max_steps`` (1.0: reassign to the end).
        progress: progress bars for feature extraction and clustering (rank 0 only).
        score_against_truth: log ``cluster/{nmi,acc}_to_truth`` where true classes exist.
        align_to_previous: rename the clusters after the previous assignment and keep the head (see above).
        features_from_average: cluster the features of the trainer's averaged weights, where it has a
            weight-averaging callback (see above).
        label_momentum: with ``align_to_previous``, keep votes across reassignments: each image's votes decay by
            this factor and gain one for its new (aligned) cluster, and its pseudo-label is the most voted cluster,
            so a cluster that k-means has given an image several times in a row outlasts one contrary
            reassignment (0: the latest k-means alone, as the paper; votes are not in the paper).
        descriptor: a name in :data:`clustering.descriptors.TEXTURE_DESCRIPTORS` (None: the network's
            features alone, as the paper). Each image's hand-crafted descriptor, computed on the same
            evaluation-transformed images (once per training set: the transform is fixed), is clustered beside
            the features (:func:`clustering.backends.cluster`): a description that does not move with the network;
            not in the paper.
        descriptor_weight: the descriptor's share of every distance, the features' being 1 (see ``cluster``), or
            ``"auto"``: at every reassignment, the one of ``descriptor_weights`` (0: the features alone) whose
            k-means agrees best with itself over random subsamples and seeds (:mod:`clustering.stability`, a
            criterion that reads no label); logged as ``cluster/descriptor_weight`` and kept in the fold's metrics.
        descriptor_weights: the candidate weights of ``"auto"``.
        agreement_decay: with ``"auto"``, choose on each weight's agreement averaged over this and the earlier
            reassignments of the run, the one ``n`` reassignments back weighted by ``agreement_decay ** n``
            (:func:`clustering.stability.mean_agreement`; 0, the default: this reassignment's measurement alone;
            1: a plain mean). 0.7 steadies the choice but lost to 0 on NEU's validation images
            (``benchmarks/results/probes/selection_cluster_neu_cpu_agreement.json``).
        refuse_merges: with ``align_to_previous``, a new k-means partition that looks like a merge of the current
            pseudo-labels (:func:`clustering.health.looks_merged`: a sharp change that grows the largest cluster
            1.5 times) is refused once: the pseudo-labels stay as they are and it casts no vote. The same merge
            proposed again at the next reassignment is accepted, so a partition the features keep finding is not
            held off for good (not in the paper; reads no label).
    """

    def __init__(self, num_clusters: int, every_n_steps: int = 100, backend: str = "faiss", pca_dim: int | None = 64,
                 whiten: bool = True, l2_normalize: bool = True, niter: int | None = None, nredo: int = 3,
                 seed: int = 0, freeze_after: float = 1.0, progress: bool = True,
                 score_against_truth: bool = True, align_to_previous: bool = False,
                 features_from_average: bool = True, label_momentum: float = 0.0, descriptor: str | None = None,
                 descriptor_weight: float | str = 1.0,
                 descriptor_weights: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0),
                 agreement_decay: float = 0.0, refuse_merges: bool = False) -> None:
        if not 0.0 <= agreement_decay <= 1.0:
            raise ValueError(f"agreement_decay lies in [0, 1], got {agreement_decay}")
        if not 0.0 < freeze_after <= 1.0:
            raise ValueError(f"freeze_after is a fraction of max_steps in (0, 1], got {freeze_after}")
        if not 0.0 <= label_momentum < 1.0 or (label_momentum and not align_to_previous):
            raise ValueError(f"label_momentum must lie in [0, 1) and needs align_to_previous, got {label_momentum}")
        if refuse_merges and not align_to_previous:
            raise ValueError("refuse_merges needs align_to_previous (the labels it keeps belong to the kept head)")
        self.refuse_merges = refuse_merges
        self._refusal: dict = {}  # the proposal refused at this reassignment, if any
        self.label_momentum = label_momentum
        self.descriptor = texture_descriptor(descriptor) if descriptor else None
        if isinstance(descriptor_weight, str) and descriptor_weight != "auto":
            raise ValueError(f"descriptor_weight is a number or 'auto', got {descriptor_weight!r}")
        self.descriptor_weight = descriptor_weight
        self.descriptor_weights = tuple(float(w) for w in descriptor_weights)
        self.agreement_decay = agreement_decay
        self._chosen: dict = {}  # the last "auto" choice: weight and each candidate's agreement
        # (the dataset described, its images' descriptors in gathered order): the evaluation transform is fixed, so
        # a training set's descriptors are computed at its first reassignment only
        self._described: tuple[object, torch.Tensor] | None = None
        self.votes: torch.Tensor | None = None
        self.freeze_after = freeze_after
        self.progress = progress
        self.score_against_truth = score_against_truth
        self.align_to_previous = align_to_previous
        self.features_from_average = features_from_average
        self.num_clusters = num_clusters
        self.every_n_steps = every_n_steps
        self.backend = backend
        self.options = {"pca_dim": pca_dim, "whiten": whiten, "l2_normalize": l2_normalize, "nredo": nredo,
                        **({"niter": niter} if niter is not None else {})}
        self.seed = seed
        self.previous: torch.Tensor | None = None
        self.history: list[dict] = []
        self._done_at = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.previous is not None:  # resumed from a checkpoint: keep training on its assignment
            pl_module.training_plan.set_pseudo_labels(self.previous)
            return
        self.reassign(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.due(trainer.global_step, trainer.max_steps):
            self.reassign(trainer, pl_module)

    def due(self, step: int, max_steps: int | None) -> bool:
        """Whether to reassign after optimizer step ``step`` of ``max_steps`` (None or -1: unbounded)."""
        if step % self.every_n_steps or step == self._done_at:
            return False
        if not max_steps or max_steps < 0:
            return True
        return max_steps - step > self.every_n_steps // 2 and step <= self.freeze_after * max_steps

    @torch.no_grad()
    def reassign(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """Features of every training image, k-means on rank 0, the assignment to every rank's training plan."""
        start = time.perf_counter()
        features, ids, extra, averaged = self._features(trainer, pl_module)
        align = self.align_to_previous and self.previous is not None  # the same on every rank
        assignment = self._cluster(trainer, features, len(ids), extra, align)
        pl_module.training_plan.set_pseudo_labels(assignment)
        if not align:
            pl_module.reset_head()
            restart_average(trainer, pl_module, "head")  # an average of heads for other cluster numbers is noise
        self._record(trainer, assignment, time.perf_counter() - start, averaged)
        return assignment

    def _features(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  dict, bool]:
        """(features, ids, the descriptors' k-means options, whether averaged weights made them) of every training
        image, gathered from the ranks, each image once; the descriptors computed once per training set."""
        loader = trainer.datamodule.feature_dataloader(trainer.world_size, trainer.global_rank)
        quiet = not (self.progress and trainer.is_global_zero)
        batches = tqdm(loader, desc="features", leave=False, disable=quiet)
        described: list[torch.Tensor] = []
        # the same on every rank, so every rank gathers the same tensors below
        cached = self._described is not None and self._described[0] is loader.dataset
        if self.descriptor is not None and not cached:
            batches = describing(batches, self.descriptor, described, pl_module.device)
        with averaged_weights(trainer, pl_module) if self.features_from_average else nullcontext(False) as averaged:
            features, ids = pl_module.extract_features(batches)
        # every rank's share, each image once; the descriptors in the same rows as the features
        ids, features, *descriptors = gather_unique(ids, features, *([torch.cat(described)] if described else []))
        if descriptors:
            self._described = (loader.dataset, descriptors[0].float().cpu())
        extra = ({"descriptors": self._described[1].numpy(), "descriptor_weight": self.descriptor_weight}
                 if self.descriptor is not None else {})
        return features, ids, extra, bool(averaged)

    def _cluster(self, trainer: L.Trainer, features: torch.Tensor, n: int, extra: dict, align: bool) -> torch.Tensor:
        """k-means on rank 0 (aligned to the previous assignment and voted, as configured), broadcast to all."""
        assignment = torch.empty(n, dtype=torch.long)
        if trainer.is_global_zero:
            quiet = not self.progress
            with tqdm(total=1, desc=f"k-means ({self.backend}, K={self.num_clusters}, N={n})", leave=False,
                      disable=quiet) as bar:
                points = features.float().cpu().numpy()
                if self.descriptor_weight == "auto" and extra:
                    extra = {**extra, "descriptor_weight": self._choose_weight(points, extra["descriptors"])}
                labels = cluster(points, self.num_clusters, self.backend, seed=self.seed + len(self.history),
                                 **self.options, **extra)
                bar.update()
            assignment = torch.from_numpy(labels)
            if align:
                assignment = align_to(assignment, self.previous, self.num_clusters)
            self._refusal = self._refused(assignment) if align and self.refuse_merges else {}
            if self._refusal:
                assignment = self.previous.clone()
            elif self.label_momentum:
                assignment = self.vote(assignment)
        return trainer.strategy.broadcast(assignment, src=0)

    def _refused(self, proposal: torch.Tensor) -> dict:
        """What is recorded of ``proposal`` if it is refused (see ``refuse_merges``), ``{}`` if it is accepted: it
        looks like a merge of the current pseudo-labels and the previous reassignment refused none."""
        if self.history and "refused_sizes" in self.history[-1]:
            return {}
        sizes = np.bincount(proposal.numpy(), minlength=self.num_clusters).tolist()
        current = np.bincount(self.previous.numpy(), minlength=self.num_clusters).tolist()
        nmi = float(normalized_mutual_info_score(proposal, self.previous))
        return {"refused_sizes": sizes, "refused_nmi_to_previous": nmi} if looks_merged(current, sizes, nmi) else {}

    def _choose_weight(self, points: np.ndarray, descriptors: np.ndarray) -> float:
        """The ``"auto"`` descriptor weight for this reassignment (:mod:`clustering.stability`): this
        reassignment's agreement of each weight, averaged with the earlier ones' (``agreement_decay``)."""
        scores = agreement_by_weight(points, descriptors, self.num_clusters, self.descriptor_weights, self.backend,
                                     seed=self.seed + len(self.history), **self.options)
        earlier = [{float(w): s for w, s in r["agreement"].items()} for r in self.history if "agreement" in r]
        basis = mean_agreement([*earlier, scores], self.agreement_decay)
        self._chosen = {"descriptor_weight": pick_weight(basis), "agreement": {str(w): s for w, s in scores.items()},
                        "mean_agreement": {str(w): s for w, s in basis.items()}}
        return self._chosen["descriptor_weight"]

    def _record(self, trainer: L.Trainer, assignment: torch.Tensor, seconds: float, averaged: bool) -> None:
        """The reassignment's sizes, agreement with the previous one (and with the truth, a diagnostic) in
        :attr:`history`, the loggers and one log line."""
        sizes = np.bincount(assignment.numpy(), minlength=self.num_clusters)
        record = {"step": trainer.global_step, "sizes": sizes.tolist(), "seconds": seconds,
                  "averaged_weights": averaged, **self._chosen, **self._refusal}
        metrics = {"cluster/min_size": float(sizes.min()), "cluster/max_size": float(sizes.max()),
                   "cluster/seconds": seconds}
        if self._chosen:
            metrics["cluster/descriptor_weight"] = self._chosen["descriptor_weight"]
        metrics.update({f"cluster/size_rank{i}": float(n) for i, n in enumerate(sorted(sizes, reverse=True))})
        if self.previous is not None:
            record["nmi_to_previous"] = float(normalized_mutual_info_score(assignment, self.previous))
            metrics["cluster/nmi_to_previous"] = record["nmi_to_previous"]
        if self.score_against_truth:
            targets = getattr(getattr(trainer.datamodule, "train_set", None), "targets", None)  # may have none
            record.update(truth_scores(assignment, targets, self.num_clusters))
            metrics.update({f"cluster/{k}": v for k, v in record.items() if k.endswith("_to_truth")})
        self.previous = assignment.clone()
        self.history.append(record)
        self._done_at = trainer.global_step
        for logger in trainer.loggers or []:
            logger.log_metrics(metrics, step=trainer.global_step)
        truth = f", ACC to the true classes {record['acc_to_truth']:.3f}" if "acc_to_truth" in record else ""
        source = ", averaged weights" if averaged else ""
        if self._chosen:
            agreement = ", ".join(f"{w}: {s:.3f} (mean {self._chosen['mean_agreement'][w]:.3f})"
                                  for w, s in self._chosen["agreement"].items())
            source += f", descriptor weight {self._chosen['descriptor_weight']:g} (self-agreement {agreement})"
        if self._refusal:
            source += (f"; refused a partition that looks merged (sizes {self._refusal['refused_sizes']}, NMI to the "
                       f"current {self._refusal['refused_nmi_to_previous']:.3f}): the pseudo-labels kept")
        rank_zero_info(f"pseudo-labels reassigned at step {trainer.global_step}: sizes {sizes.tolist()} "
                       f"({seconds:.1f} s{truth}{source})")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Empty clusters, pseudo-labels that never changed, clusters that look merged: said again at the end of the run
        (:mod:`clustering.health`, :mod:`workflow.run_warnings`)."""
        for message in clustering_warnings(self.history, self.num_clusters):
            add_warning(pl_module, message)
        chosen = [r["descriptor_weight"] for r in self.history if "descriptor_weight" in r]
        summary = ({"descriptor_weight_last": chosen[-1], "descriptor_weight_mean": float(np.mean(chosen))}
                   if chosen else {})  # the label-free choices, for the fold's metrics
        if self.refuse_merges:
            summary["merges_refused"] = sum("refused_sizes" in r for r in self.history)
        if summary:
            pl_module.training_summary = summary

    def vote(self, assignment: torch.Tensor) -> torch.Tensor:
        """The most voted cluster of each image once ``assignment`` has voted (see ``label_momentum``)."""
        ballot = torch.nn.functional.one_hot(assignment, self.num_clusters).float()
        self.votes = ballot if self.votes is None else self.label_momentum * self.votes + ballot
        return self.votes.argmax(1)

    def state_dict(self) -> dict:
        return {"previous": self.previous, "history": self.history, "done_at": self._done_at, "votes": self.votes}

    def load_state_dict(self, state_dict: dict) -> None:
        self.votes = state_dict.get("votes")
        self.previous = state_dict.get("previous")
        self.history = state_dict.get("history", [])
        self._done_at = state_dict.get("done_at", -1)
