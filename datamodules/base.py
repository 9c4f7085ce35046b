"""The base DataModule: a sample table split into folds by group, served to Lightning, decoded on demand."""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.archive import download, extract_once
from datamodules.checks import check_data_args, check_root
from datamodules.dataset import SampleDataset
from datamodules.decoded_cache import DecodedCache
from datamodules.errors import DatasetError
from datamodules.header_check import check_headers, upscale_warning
from datamodules.samples import Sample
from datamodules.splits import assign_group_folds
from datamodules.training_plan import TrainingPlan, call_hook
from workflow.run_warnings import add_warning


class DefectDataModule(L.LightningDataModule):
    """Base of every dataset: list samples (a pure function), split 3 folds by group, serve (decoding on demand).

    Subclasses implement :meth:`list_samples` and, where the dataset has an official split,
    :meth:`official_test_groups`. Folds never split a group (for KolektorSDD: a commutator ``kosNN``).

    Args:
        root: dataset folder (the one that holds the dataset's own top-level layout).
        archive: a local zip extracted once into ``root`` when ``root`` is absent.
        url, sha256: where to download ``archive`` from when it is absent too, and its checksum.
        fold: the test fold, ``0 .. num_folds-1``; the other folds train.
        num_defective: keep this many defective training images (seeded); ``None`` keeps all.
        image_size: (H, W) every image is resized to.
        test_groups: explicit test groups per fold, overriding the official or the generated split.
        seed: chooses the ``num_defective`` images and orders the training batches.
        split_seed: the generated split by group (datasets without an official one); fixed apart from
            ``seed`` so that the folds stay put while the seed varies.
        val_fraction: hold out about this fraction of the training groups (stratified, by ``split_seed``)
            as a validation set, before ``num_defective`` applies; 0 = no validation. The weak method then
            reports ``val/ap`` and keeps the best checkpoint on it (never chosen on the test fold).
        num_workers: loader workers (they decode the images).
        cache: ``"ram"``: keep decoded images in RAM, up to ``cache_max_gib`` per process
            (:class:`~datamodules.decoded_cache.DecodedCache`: fill-until-full; each loader worker holds its own);
            ``"none"``: decode at every read.
        cache_max_gib: the cache's size limit in GiB.

    How the training images are sampled and augmented is the attached module's ``training_plan``
    (:class:`~datamodules.training_plan.TrainingPlan`), not the DataModule's.
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
        test_groups: Sequence[Sequence[str]] | None = None,
        seed: int = 0,
        split_seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int = 4,
        val_fraction: float = 0.0,
        cache: str = "ram",
        cache_max_gib: float = 2.0,
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
        self.test_groups = [list(g) for g in test_groups] if test_groups else None
        self.seed = seed
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.eval_batch_size = eval_batch_size
        self.cache = DecodedCache.from_config(cache, cache_max_gib)
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
        samples = [*self.train_samples, *self.val_samples, *self.test_samples]
        message = upscale_warning(samples, check_headers(samples), self.image_size)
        if message is not None:
            self.warn(message)
        self.train_set = SampleDataset(self.train_samples, self.image_size, self.cache)
        self.val_set = SampleDataset(self.val_samples, self.image_size, self.cache)
        self.test_set = SampleDataset(self.test_samples, self.image_size, self.cache)

    def warn(self, message: str) -> None:
        """Warn now, and where a trainer with a module is attached (``trainer.fit`` / ``test``) keep ``message`` for
        the end of the run and ``metrics.json`` (:func:`workflow.run_warnings.add_warning`)."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None:
            add_warning(module, message)
        else:
            rank_zero_warn(message)

    # -- loaders --------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def training_plan(self) -> TrainingPlan:
        """The attached module's ``training_plan`` (how its method samples and augments training images)."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        plan = getattr(module, "training_plan", None)
        if plan is None:
            raise ValueError("training needs a module with a training_plan (model.training_plan): "
                             f"{type(module).__name__} has none")
        return plan

    def train_dataloader(self) -> DataLoader:
        """The training batches of the module's plan (:meth:`training_plan`); under DDP this rank's share."""
        world, rank = self._world()
        return self.training_plan().train_dataloader(self.train_set, world, rank, self.num_workers, self.seed)

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
        """The test fold; first the training images too (to fix a threshold without test data) where the attached
        module's class says ``tests_training_images`` (the default without a module)."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        test = self._eval_loader(self.test_set, shard=True)
        if getattr(module, "tests_training_images", True):
            return [self._eval_loader(self.train_set, shard=True), test]
        return [test]

    def _training_batch(self) -> bool:
        return self.trainer is not None and self.trainer.training

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch before it moves to the device: the plan's ``on_before_batch_transfer``, if it has one."""
        if self._training_batch():
            return call_hook(self.training_plan(), "on_before_batch_transfer", batch, dataloader_idx)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch on the training device: the plan's ``on_after_batch_transfer`` (given the global step)."""
        if self._training_batch():
            return call_hook(self.training_plan(), "on_after_batch_transfer", batch, dataloader_idx,
                             self.trainer.global_step)
        return batch

    def feature_dataloader(self, world_size: int = 1, rank: int = 0) -> DataLoader:
        """The training images with the evaluation transform, this rank's share under DDP, in order."""
        sampler = DistributedSampler(self.train_set, world_size, rank, shuffle=False) if world_size > 1 else None
        return DataLoader(self.train_set, batch_size=self.eval_batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers)
