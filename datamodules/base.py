"""The base DataModule: a sample table split into folds by group, decoded once, served to Lightning."""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from datamodules.archive import download, extract_once
from datamodules.checks import check_data_args, check_root
from datamodules.errors import DatasetError
from datamodules.resumable import ResumableDataLoader
from datamodules.samples import DecodedCache, Sample
from datamodules.sampling import BalancedBatchSampler, ShardedBatchSampler, UniformOverLabelsSampler
from datamodules.splits import assign_group_folds


class DecodedDataset(Dataset):
    """Samples decoded (and resized) once through :class:`DecodedCache`; items are dicts of tensors."""

    def __init__(self, samples: Sequence[Sample], size: tuple[int, int]) -> None:
        self.samples = list(samples)
        self.size = size
        decoded = [DecodedCache.get(s, size) for s in self.samples]
        self.images = torch.stack([d[0] for d in decoded]) if decoded else torch.empty(0, 1, *size)
        self.masks = torch.stack([d[1] for d in decoded]) if decoded else torch.empty(0, 1, *size)
        self.labels = torch.tensor([s.label for s in self.samples], dtype=torch.float32)
        self.mask_known = torch.tensor([s.mask_known for s in self.samples], dtype=torch.bool)
        self.targets = torch.tensor([s.target for s in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.images[index].float().div_(255.0),
            "mask": self.masks[index],
            "mask_known": self.mask_known[index],
            "label": self.labels[index],
            "target": self.targets[index],
            "index": index,
            "name": self.samples[index].name,
        }


class ViewsDataset(Dataset):
    """Training items for the clustering method: the views of an image and its current pseudo-label.

    With a per-batch views transform (``views.per_batch``, :class:`datamodules.views.BatchedMultiCropViews`)
    an item holds the decoded image instead (``"image"``, uint8), and the DataModule makes the views after the
    batch reached the training device. The pseudo-labels live in shared memory, so loader workers read the
    current ones; the DataModule still re-reads them for each batch before its transfer (workers prefetch batches).
    """

    def __init__(self, base: DecodedDataset, views: Callable[..., list[torch.Tensor]]) -> None:
        self.base = base
        self.views = views
        self.per_batch = bool(getattr(views, "per_batch", False))
        self.pseudo_labels = torch.zeros(len(base), dtype=torch.long).share_memory_()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"pseudo_label": self.pseudo_labels[index], "index": index}
        if self.per_batch:
            return item | {"image": self.base.images[index]}
        return item | {"views": self.views(self.base.images[index].float().div_(255.0))}


class DefectDataModule(L.LightningDataModule):
    """Base of every dataset: list samples (a pure function), split 3 folds by group, decode, serve.

    Subclasses implement :meth:`list_samples` and, where the dataset has an official split,
    :meth:`official_test_groups`. Folds never split a group (for KolektorSDD: a commutator ``kosNN``).

    Args:
        root: dataset folder (the one that holds the dataset's own top-level layout).
        archive: a local zip extracted once into ``root`` when ``root`` is absent.
        url, sha256: where to download ``archive`` from when it is absent too, and its checksum.
        fold: the test fold, ``0 .. num_folds-1``; the other folds train.
        num_defective: keep this many defective training images (seeded); ``None`` keeps all.
        image_size: (H, W) every image is resized to.
        pairs_per_batch: defective + defect-free pairs per training batch (1 = the paper's batch of 1+1).
        train_mode: ``"pairs"`` (balanced defective/defect-free batches, the weak method) or ``"views"``
            (multi-view crops with pseudo-labels, sampled uniformly over pseudo-classes: the clustering
            method; set the labels with :meth:`set_pseudo_labels`).
        views: the multi-view transform for ``train_mode="views"`` (e.g. :class:`datamodules.views.MultiCropViews`).
        batch_size: images per training batch in ``"views"`` mode.
        test_groups: explicit test groups per fold, overriding the official or the generated split.
        seed: chooses the ``num_defective`` images and orders the training batches.
        split_seed: the generated split by group (datasets without an official one); fixed apart from
            ``seed`` so that the folds stay put while the seed varies.
        val_fraction: hold out about this fraction of the training groups (stratified, by ``split_seed``)
            as a validation set, before ``num_defective`` applies; 0 = no validation. The weak method then
            reports ``val/ap`` and keeps the best checkpoint on it (never chosen on the test fold).
    """

    def __init__(
        self,
        root: str | Path,
        archive: str | Path | None = None,
        url: str | None = None,
        sha256: str | None = None,
        fold: int = 0,
        num_folds: int = 3,
        num_defective: int | None = None,
        image_size: Sequence[int] = (1408, 512),
        pairs_per_batch: int = 1,
        test_groups: Sequence[Sequence[str]] | None = None,
        seed: int = 0,
        split_seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int = 4,
        train_mode: str = "pairs",
        views: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
        batch_size: int = 32,
        val_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        check_data_args(root, archive, url, sha256, num_folds, num_defective, image_size, self.download_hint)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.val_fraction = val_fraction
        self.root = Path(root)
        self.archive = Path(archive) if archive else None
        self.url = url
        self.sha256 = sha256
        if not 0 <= fold < num_folds:
            raise DatasetError(f"fold {fold} is out of range: this dataset has folds 0..{num_folds - 1}")
        self.fold = fold
        self.num_folds = num_folds
        self.num_defective = num_defective
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.pairs_per_batch = pairs_per_batch
        self.test_groups = [list(g) for g in test_groups] if test_groups else None
        self.seed = seed
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.eval_batch_size = eval_batch_size
        if train_mode not in ("pairs", "views"):
            raise ValueError(f"train_mode must be 'pairs' or 'views', got {train_mode!r}")
        if train_mode == "views" and views is None:
            raise ValueError("train_mode='views' needs a views transform (data.views)")
        self.train_mode = train_mode
        self.views = views
        self.batch_size = batch_size
        self._views_batch_of_step: tuple[int | None, int] = (None, -1)
        self.train_samples: list[Sample] = []
        self.val_samples: list[Sample] = []
        self.test_samples: list[Sample] = []

    # -- what a subclass provides ---------------------------------------------------------------
    @abstractmethod
    def list_samples(self) -> list[Sample]:
        """All samples of the dataset under ``self.root``."""

    def official_test_groups(self) -> list[list[str]] | None:
        """The dataset's official test groups per fold, if it has them."""
        return None

    def official_training_groups(self) -> list[str] | None:
        """The groups an official split trains on (every image of them), if it names them; else every group
        outside the test fold."""
        return None

    def official_validation_groups(self) -> list[str] | None:
        """The groups an official split validates on, if it names them (then ``val_fraction`` is not used)."""
        return None

    download_hint: str = "see the README for where to get this dataset"

    # -- getting data onto disk -----------------------------------------------------------------
    def prepare_data(self) -> None:
        """Make ``root`` exist: extract ``archive`` into it (downloading it first from ``url``)."""
        check_root(self.root, self.archive, self.url, self.download_hint)
        if self.root.exists() and not (self.archive is not None and not any(self.root.iterdir())):
            return
        if self.archive is not None:
            if not self.archive.exists() and self.url:
                download(self.url, self.archive, self.sha256)
            if not self.archive.exists():
                raise DatasetError(f"archive {self.archive} does not exist; {self.download_hint}")
            extract_once(self.archive, self.root)
            return
        if self.url:
            raise DatasetError(f"data.url is set but data.archive is not: name the zip to download {self.url} to")
        raise DatasetError(f"dataset root {self.root} does not exist; {self.download_hint}")

    @property
    def dataset_dir(self) -> Path:
        """``root``, or the single top folder an extracted archive put inside it."""
        if (self.root / ".extracted").exists():
            entries = [p for p in self.root.iterdir() if not p.name.startswith(".")]
            if len(entries) == 1 and entries[0].is_dir():
                return entries[0]
        return self.root

    # -- splitting ------------------------------------------------------------------------------
    def split(self, samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
        """(train, test) samples of ``self.fold``, with ``num_defective`` applied to train."""
        folds = self.test_groups or self.official_test_groups()
        if folds is None:
            assignment = assign_group_folds(self.group_strata(samples), self.num_folds, self.split_seed)
            folds = [[g for g, f in assignment.items() if f == k] for k in range(self.num_folds)]
        if len(folds) != self.num_folds:
            raise DatasetError(f"the split has {len(folds)} folds, expected {self.num_folds}")
        known = {s.group for s in samples}
        test_set = set(folds[self.fold])
        missing = sorted(test_set - known)
        if missing:
            raise DatasetError(f"the split names groups not found under {self.root}: {', '.join(missing[:5])}")
        train = [s for s in samples if s.group not in test_set]
        test = [s for s in samples if s.group in test_set]
        allowed = self.official_training_groups()
        if allowed is not None:
            allowed_set = set(allowed)
            missing = sorted(allowed_set - {s.group for s in train})
            if missing:
                raise DatasetError(f"the split trains on groups not found under {self.root} outside the test fold: "
                                   f"{', '.join(missing[:5])}")
            train = [s for s in train if s.group in allowed_set]
        validation = self.official_validation_groups()
        if validation is not None:
            validation_set = set(validation) - test_set
            self.val_samples = [s for s in samples if s.group in validation_set]
            return self.select_defective(train), test
        train, self.val_samples = self.hold_out(train)
        return self.select_defective(train), test

    @staticmethod
    def group_strata(samples: Sequence[Sample]) -> dict[str, str]:
        """Each group's stratum: the largest of its samples' (a group with a defect is defective)."""
        strata: dict[str, str] = {}
        for s in sorted(samples, key=lambda s: s.stratum):
            strata[s.group] = max(strata.get(s.group, ""), s.stratum)
        return strata

    def hold_out(self, train: list[Sample]) -> tuple[list[Sample], list[Sample]]:
        """(train, validation): about ``val_fraction`` of the training groups, stratified, by ``split_seed``."""
        if not self.val_fraction:
            return train, []
        parts = max(2, round(1 / self.val_fraction))
        assignment = assign_group_folds(self.group_strata(train), parts, self.split_seed + 1)
        return [s for s in train if assignment[s.group] != 0], [s for s in train if assignment[s.group] == 0]

    def select_defective(self, train: list[Sample]) -> list[Sample]:
        """Keep ``num_defective`` defective training images, chosen by seed; defect-free ones unchanged."""
        defective = [s for s in train if s.label == 1]
        if self.num_defective is not None:
            if self.num_defective > len(defective):
                raise DatasetError(
                    f"num_defective={self.num_defective} but fold {self.fold} has only {len(defective)} "
                    f"defective training images"
                )
            defective = sorted(defective, key=lambda s: s.name)
            random.Random(self.seed).shuffle(defective)
            defective = defective[: self.num_defective]
        keep = {s.name for s in defective}
        return [s for s in train if s.label == 0 or s.name in keep]

    def setup(self, stage: str | None = None) -> None:
        if self.train_samples:
            return
        if not self.root.exists():
            raise DatasetError(f"dataset root {self.root} does not exist; {self.download_hint}")
        self.train_samples, self.test_samples = self.split(self.list_samples())
        self.train_set = DecodedDataset(self.train_samples, self.image_size)
        self.val_set = DecodedDataset(self.val_samples, self.image_size)
        self.test_set = DecodedDataset(self.test_samples, self.image_size)
        if self.train_mode == "views":
            self.views_set = ViewsDataset(self.train_set, self.views)

    # -- loaders --------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        """Training batches; under DDP (``W`` ranks) this rank's share of the single-process batches.

        A global step is then one batch per rank, ``W`` batches in all (``W`` balanced pairs per step for the
        weak method, ``W * batch_size`` images for the clustering method); the step counts (``max_steps``,
        the stage plan) are unchanged. The ranks take consecutive batches of the same seeded order
        (:class:`ShardedBatchSampler`; no image twice in a step in ``"pairs"`` mode). With one process the
        loader is the single-process one.
        """
        world, rank = self._world()
        if self.train_mode == "views":
            sampler = UniformOverLabelsSampler(self.views_set.pseudo_labels, seed=self.seed)
            if world == 1:
                return ResumableDataLoader(self.views_set, batch_size=self.batch_size, sampler=sampler,
                                           drop_last=True, num_workers=self.num_workers,
                                           persistent_workers=self.num_workers > 0)
            batches = ShardedBatchSampler(BatchSampler(sampler, self.batch_size, drop_last=True), world, rank)
            return ResumableDataLoader(self.views_set, batch_sampler=batches, num_workers=self.num_workers,
                                       persistent_workers=self.num_workers > 0)
        labels = self.train_set.labels
        sampler = BalancedBatchSampler(
            defective=torch.nonzero(labels == 1).flatten().tolist(),
            clean=torch.nonzero(labels == 0).flatten().tolist(),
            pairs=self.pairs_per_batch,
            seed=self.seed,
        )
        if world > 1:
            sampler = ShardedBatchSampler(sampler, world, rank, distinct_period=2)
        return ResumableDataLoader(self.train_set, batch_sampler=sampler, num_workers=self.num_workers)

    def _eval_loader(self, dataset: Dataset, shard: bool = False) -> DataLoader:
        """In order; with ``shard`` under DDP this rank's share (a DistributedSampler, which pads the last
        round with repeats: the modules gather the ranks' results and keep each image once)."""
        world, rank = self._world() if shard else (1, 0)
        sampler = DistributedSampler(dataset, world, rank, shuffle=False) if world > 1 else None
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        """The held-out training groups (``val_fraction``), or none."""
        return self._eval_loader(self.val_set, shard=True) if self.val_samples else []

    def test_dataloader(self) -> list[DataLoader]:
        """Two loaders: the training images (to fix a threshold without test data), then the test fold."""
        return [self._eval_loader(self.train_set, shard=True), self._eval_loader(self.test_set, shard=True)]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch in ``"views"`` mode, before it moves to the device: its pseudo-labels re-read from the
        current assignment (a batch a loader worker prefetched before a reassignment carries the old ones)."""
        if self._is_views_batch(batch):
            batch["pseudo_label"] = self.views_set.pseudo_labels[batch["index"]]
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch in ``"views"`` mode with a per-batch views transform, on the training device: its views
        made here from the decoded images (random draws from :meth:`_views_generator`)."""
        if self._is_views_batch(batch) and self.views_set.per_batch:
            images = batch.pop("image").float().div_(255.0)
            batch["views"] = self.views(images, self._views_generator(images.device))
        return batch

    def _is_views_batch(self, batch: Any) -> bool:
        return self.train_mode == "views" and isinstance(batch, dict) and "pseudo_label" in batch

    def _views_generator(self, device: torch.device) -> torch.Generator:
        """The per-batch views' random stream: seeded by ``seed``, the global step, the rank and the batch's place
        among those of the same step (several with gradient accumulation), so a resumed run draws the same views."""
        step, rank = (self.trainer.global_step, self.trainer.global_rank) if self.trainer is not None else (0, 0)
        last_step, count = self._views_batch_of_step
        count = count + 1 if step == last_step else 0
        self._views_batch_of_step = (step, count)
        return torch.Generator(device).manual_seed(((self.seed * 1_000_003 + step) * 1009 + rank) * 31 + count)

    def set_pseudo_labels(self, labels: torch.Tensor) -> None:
        """Replace the training images' pseudo-labels in place (shared memory: the sampler and the loader workers see
        the change)."""
        if len(labels) != len(self.train_set):
            raise ValueError(f"{len(labels)} pseudo-labels for {len(self.train_set)} training images")
        self.views_set.pseudo_labels.copy_(torch.as_tensor(labels, dtype=torch.long))

    def feature_dataloader(self, world_size: int = 1, rank: int = 0) -> DataLoader:
        """The training images with the evaluation transform, this rank's share under DDP, in order."""
        sampler = DistributedSampler(self.train_set, world_size, rank, shuffle=False) if world_size > 1 else None
        return DataLoader(self.train_set, batch_size=self.eval_batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)
