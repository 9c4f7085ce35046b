"""Rebuild a trained model from a checkpoint for inference: its config, its weights, evaluation mode.

A checkpoint of :class:`~lightning_modules.weak.WeakDetectionModule` lacks ``net`` and ``optimizer`` in its
hyper-parameters, so ``load_from_checkpoint`` alone cannot rebuild it. The model's config is taken from,
in this order:

1. ``config_path`` when given (a composed run config such as ``<run>/.hydra/config.yaml``);
2. the config stored in the checkpoint by :class:`callbacks.config_in_checkpoint.ConfigInCheckpoint`;
3. the nearest ``.hydra/config.yaml`` up to 5 folders above the checkpoint (``train.py`` writes checkpoints
   under ``<run>/fold<k>/...`` and Hydra's config to ``<run>/.hydra/config.yaml``).

The model is built with ``hydra.utils.instantiate`` (no optimizer: inference only), its ``state_dict`` is
loaded strictly and it is put in evaluation mode.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from callbacks.config_in_checkpoint import CONFIG_KEY

#: the first version of the stored config whose ``data.fold`` is the fold the checkpoint was trained on
FOLD_STORED_FROM_VERSION = 2

log = logging.getLogger(__name__)

_FOLD = re.compile(r"^fold(\d+)$")
#: how many folders above a checkpoint its run folder may be (``<run>/csv/version_0/checkpoints/last.ckpt``: 4)
MAX_RUN_DEPTH = 5
#: image modes by the number of input channels of the model's first convolution (training reads grayscale)
COLOR_MODES: dict[int, str] = {1: "L", 3: "RGB"}


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what inference needs to know about its training.

    Attributes:
        module: the LightningModule, in evaluation mode, on the CPU.
        model_config: the ``model`` config it was built from (plain containers).
        image_size: the training ``data.image_size`` (H, W), or ``None`` where the config does not say.
        config_source: where the config came from (``"checkpoint"`` or a file path).
        checkpoint: the checkpoint file.
        run_dir: the run folder (holding ``.hydra/``), when found.
        fold: the fold the checkpoint belongs to: a ``fold<k>`` folder in its path, else the ``data.fold`` stored
            in the checkpoint by ``ConfigInCheckpoint`` (version 2 on; in version 1 it was only the config's
            default), else ``None``.
    """

    module: L.LightningModule
    model_config: dict[str, Any]
    image_size: tuple[int, int] | None
    config_source: str
    checkpoint: Path
    run_dir: Path | None
    fold: int | None

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
        ``<run>/metrics.json``, written at the end of ``train.py``), or ``None`` where it is not found."""
        if self.run_dir is None or self.fold is None or not (self.run_dir / "metrics.json").is_file():
            return None
        report = json.loads((self.run_dir / "metrics.json").read_text())
        for fold in report.get("folds", []):
            if fold.get("fold") == self.fold and fold.get("fixed_threshold") is not None:
                return float(fold["fixed_threshold"])
        return None


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


def stored_fold(checkpoint: dict[str, Any]) -> int | None:
    """The fold stored in the checkpoint's config (``data.fold``), where its version says it is the trained
    fold; ``None`` otherwise."""
    stored = checkpoint.get(CONFIG_KEY) or {}
    fold = (stored.get("data") or {}).get("fold")
    if stored.get("version", 1) < FOLD_STORED_FROM_VERSION or not isinstance(fold, int):
        return None
    return fold


def _section(cfg: DictConfig, key: str) -> Any:
    """A section of a composed config as plain containers, interpolations resolved."""
    node = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


def read_config(checkpoint: dict[str, Any], checkpoint_path: Path,
                config_path: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(model config, data config, source) of a checkpoint, by the order in the module docstring."""
    if config_path is None and CONFIG_KEY in checkpoint:
        stored = checkpoint[CONFIG_KEY]
        return dict(stored["model"]), dict(stored.get("data") or {}), "checkpoint"
    path = Path(config_path) if config_path is not None else find_run_config(checkpoint_path)
    if path is None:
        raise FileNotFoundError(
            f"{checkpoint_path} holds no model config ('{CONFIG_KEY}') and no .hydra/config.yaml was found above "
            "it: pass config_path=<run>/.hydra/config.yaml (the composed config of the run that trained it)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig) or "model" not in cfg:
        raise ValueError(f"{path} has no 'model' section: expected a composed run config (.hydra/config.yaml)")
    data = OmegaConf.select(cfg, "data")
    data_cfg = {"image_size": _section(cfg, "data.image_size")} if data is not None else {}
    return _section(cfg, "model"), data_cfg, str(path)


def build_module(model_config: dict[str, Any]) -> L.LightningModule:
    """Instantiate the LightningModule of ``model_config`` for inference: no optimizer, and no pretrained
    backbone file (``checkpoint_path``): the checkpoint's weights replace them anyway."""
    overrides: dict[str, Any] = {"optimizer": None}
    if "checkpoint_path" in model_config:
        overrides["checkpoint_path"] = None
    if isinstance(model_config.get("backbone"), dict):
        overrides["backbone"] = {**model_config["backbone"], "checkpoint_path": None}
    return instantiate(model_config, **overrides, _convert_="all")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` (tensors and plain containers only: loading runs no code);
    a checkpoint holding other objects (e.g. numpy values a callback stored) is then read with full unpickling,
    as Lightning itself does, with a warning: load only checkpoints you trust."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        log.warning("%s holds more than tensors and plain containers (%s); loading it with full unpickling",
                    path, str(err).splitlines()[0])
        return torch.load(path, map_location="cpu", weights_only=False)


def load_trained_model(ckpt_path: str | Path, config_path: str | Path | None = None) -> TrainedModel:
    """Rebuild the model saved in ``ckpt_path`` (a Lightning checkpoint of this project) for inference; the
    config comes from ``config_path``, the checkpoint or the run folder (see the module docstring)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = read_checkpoint(path)
    model_cfg, data_cfg, source = read_config(checkpoint, path, config_path)
    module = build_module(model_cfg)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"the weights in {path} do not fit the model built from its config ({source}): was "
                           f"it trained with another version of the code, or is config_path another run's?\n{err}"
                           ) from err
    module.eval()
    size = data_cfg.get("image_size")
    config_file = Path(source) if source != "checkpoint" else find_run_config(path)
    run_dir = config_file.parent.parent if config_file is not None else None
    fold = fold_of(path)
    if fold is None:
        fold = stored_fold(checkpoint)
    return TrainedModel(module=module, model_config=model_cfg,
                        image_size=(int(size[0]), int(size[1])) if size is not None else None,
                        config_source=source, checkpoint=path, run_dir=run_dir, fold=fold)
