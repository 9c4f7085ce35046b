"""Trained models from checkpoints, loaded safely and rebuilt by Lightning.

* A checkpoint is read with ``torch.load(weights_only=True)`` only: tensors and plain containers, no code runs.
  A file this refuses (not a checkpoint, or one holding other objects, such as a crafted pickle) is a
  :class:`CheckpointError` naming it. There is no fallback to full unpickling.
* The method is the one whose name the checkpoint records (:data:`lightning_modules.method.METHOD_KEY`); its
  class's ``load_from_checkpoint(weights_only=True)`` rebuilds the model from its saved hyper-parameters.
* What inference needs besides the model (the training image size, the fold) comes from the run config that
  :class:`callbacks.config_in_checkpoint.ConfigInCheckpoint` stores in the checkpoint; the run folder (for the
  fold's fixed threshold in ``metrics.json``) is the nearest one above holding ``.hydra/config.yaml``.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from callbacks.config_in_checkpoint import CONFIG_KEY
from lightning_modules.method import METHOD_KEY, DefectMethod, method_class
from workflow.gathering import FOLD_RESULT_FILE, load_fold_result

if TYPE_CHECKING:
    from datamodules.base import DefectDataModule

_FOLD = re.compile(r"^fold(\d+)$")
#: how many folders above a checkpoint its run folder may be (``<run>/csv/version_0/checkpoints/last.ckpt``: 4)
MAX_RUN_DEPTH = 5
#: image modes by the number of input channels of the model's first convolution (training reads grayscale)
COLOR_MODES: dict[int, str] = {1: "L", 3: "RGB"}


class CheckpointError(ValueError):
    """A missing file, or one that is not a checkpoint this project can load safely (a run stops with the message
    alone: :data:`workflow.failure.CLEAN_ERRORS`)."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint in ``path``, read with ``weights_only=True`` (memory-mapped where the file allows)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ...: whatever the file makes torch raise
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"checkpoint {path} was refused by the safe loader (torch.load with weights_only=True: "
                              f"{reason}). It is not a checkpoint saved by this project, or it holds objects other "
                              "than tensors and plain containers; it was not loaded.") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def checkpoint_method(path: Path, checkpoint: dict[str, Any] | None = None) -> str:
    """The registry name of the method that saved the checkpoint in ``path``."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    name = checkpoint.get(METHOD_KEY)
    if not isinstance(name, str):
        raise CheckpointError(f"checkpoint {path} does not record the method that saved it ('{METHOD_KEY}'): it "
                              "was not saved by a method of this version of the project")
    return name


def load_method(path: str | Path, checkpoint: dict[str, Any] | None = None, **overrides: Any) -> DefectMethod:
    """The model saved in ``path``, rebuilt by its method's ``load_from_checkpoint`` (``weights_only=True``) on
    the CPU, in evaluation mode; ``overrides`` replace saved hyper-parameters."""
    path = Path(path)
    cls = method_class(checkpoint_method(path, checkpoint))
    try:
        module = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True, **overrides)
    except (RuntimeError, TypeError, KeyError) as err:
        raise CheckpointError(f"cannot rebuild the {cls.name!r} model of checkpoint {path}: {err}") from err
    return module.eval()


def find_run_config(checkpoint: Path, levels: int = MAX_RUN_DEPTH) -> Path | None:
    """The nearest ``.hydra/config.yaml`` in one of the ``levels`` folders above ``checkpoint``."""
    for folder in checkpoint.resolve().parents[:levels]:
        candidate = folder / ".hydra" / "config.yaml"
        if candidate.is_file():
            return candidate
    return None


def fold_of(checkpoint: Path) -> int | None:
    """The ``k`` of the innermost ``fold<k>`` folder in the checkpoint's path."""
    for part in reversed(checkpoint.resolve().parts[:-1]):
        match = _FOLD.match(part)
        if match:
            return int(match[1])
    return None


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what inference needs to know about its training.

    Attributes:
        module: the method's LightningModule, in evaluation mode, on the CPU.
        image_size: the training ``data.image_size`` (H, W) stored in the checkpoint, or ``None``.
        checkpoint: the checkpoint file.
        run_dir: the run folder (holding ``.hydra/``), when found.
        fold: the fold the checkpoint belongs to: a ``fold<k>`` folder in its path, else the stored ``data.fold``.
        data: the training ``data`` config stored in the checkpoint (``{}`` where there is none).
    """

    module: DefectMethod
    image_size: tuple[int, int] | None
    checkpoint: Path
    run_dir: Path | None
    fold: int | None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        """Input channels: those of the first convolution of the model."""
        first = next((m for m in self.module.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError(f"{type(self.module).__name__} has no convolution to read its input channels from")
        return first.in_channels

    @property
    def color_mode(self) -> str:
        """The PIL mode images are converted to before inference (``"L"`` for grayscale-trained models)."""
        channels = self.in_channels
        if channels not in COLOR_MODES:
            raise ValueError(f"models with {channels} input channels are not supported (only {sorted(COLOR_MODES)})")
        return COLOR_MODES[channels]

    def fixed_threshold(self) -> float | None:
        """The fold's threshold fixed on its training images (``fixed_threshold`` of this fold in
        ``<run>/metrics.json``, written at the end of ``train.py``, or in the fold's own ``fold_result.pt``, written
        when its test ended, also in a run stopped later), or ``None`` where it is not found."""
        if self.run_dir is None or self.fold is None:
            return None
        if (self.run_dir / "metrics.json").is_file():
            report = json.loads((self.run_dir / "metrics.json").read_text())
            for fold in report.get("folds", []):
                if fold.get("fold") == self.fold and fold.get("fixed_threshold") is not None:
                    return float(fold["fixed_threshold"])
        fold_dir = self.run_dir / f"fold{self.fold}"
        if (fold_dir / FOLD_RESULT_FILE).is_file():
            threshold = load_fold_result(fold_dir).get("metrics", {}).get("fixed_threshold")
            return float(threshold) if threshold is not None else None
        return None

    def datamodule(self, overrides: Sequence[str] = ()) -> DefectDataModule:
        """The DataModule of the fold this model was trained on, from the stored ``data`` config with ``overrides``
        as given to ``train.py`` (``data.<key>=<value>``, e.g. ``data.archive=../shared/datasets/KolektorSDD.zip``),
        set up (its ``train_samples`` and ``test_samples`` listed)."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        if not self.data.get("_target_") or self.fold is None:
            raise ValueError(f"checkpoint {self.checkpoint} stores no data config or fold to rebuild its data from")
        wrong = [o for o in overrides if not o.startswith("data.")]
        if wrong:
            raise ValueError(f"data overrides must read data.<key>=<value>, got {wrong}")
        config = OmegaConf.merge(OmegaConf.create(self.data),
                                 OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides]))
        datamodule = instantiate(config, fold=self.fold)
        datamodule.prepare_data()
        datamodule.setup("test")
        return datamodule


def load_trained_model(ckpt_path: str | Path) -> TrainedModel:
    """Rebuild the model saved in ``ckpt_path`` (a checkpoint written by ``train.py``) for inference."""
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)
    module = load_method(path, checkpoint)
    data = (checkpoint.get(CONFIG_KEY) or {}).get("data") or {}
    size = data.get("image_size")
    config_file = find_run_config(path)
    fold = fold_of(path)
    if fold is None and isinstance(data.get("fold"), int):
        fold = data["fold"]
    return TrainedModel(module=module, image_size=(int(size[0]), int(size[1])) if size is not None else None,
                        checkpoint=path, run_dir=config_file.parent.parent if config_file is not None else None,
                        fold=fold, data=data)
