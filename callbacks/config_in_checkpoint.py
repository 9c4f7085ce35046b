"""Store the run's resolved ``model`` and ``data`` config inside every checkpoint, so that a checkpoint alone
tells inference (``predict.py``, ``export.py``) how its model was trained: the model itself is rebuilt from its
saved hyper-parameters (``load_from_checkpoint``); :func:`lightning_modules.checkpoints.load_trained_model` reads
the training image size and the fold from this config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

#: the checkpoint key the config is stored under
CONFIG_KEY = "defect_lab_config"
#: bumped when what is stored under :data:`CONFIG_KEY` changes meaning (2: ``data.fold`` is the fold the
#: checkpoint was trained on; in 1 it was the config's default)
CONFIG_VERSION = 2


def plain_sections(config: Mapping | DictConfig, keys: Sequence[str]) -> dict[str, Any]:
    """The sections ``keys`` of ``config`` as plain containers, interpolations resolved where they can be
    (a section that cannot be resolved, e.g. one reading ``${hydra:...}`` outside a Hydra app, is kept
    unresolved with a warning). Missing sections are left out."""
    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(dict(config))
    out: dict[str, Any] = {}
    for key in keys:
        if key not in cfg or cfg[key] is None:
            continue
        try:
            out[key] = OmegaConf.to_container(cfg[key], resolve=True)
        except OmegaConfBaseException as err:
            rank_zero_warn(f"config section {key!r} kept unresolved in checkpoints: {err}")
            out[key] = OmegaConf.to_container(cfg[key], resolve=False)
    return out


class ConfigInCheckpoint(L.Callback):
    """Put ``checkpoint["defect_lab_config"] = {"version": 2, "model": {...}, "data": {...}}`` into every
    checkpoint the trainer saves (``ModelCheckpoint``, ``StageCheckpoint``, ``trainer.save_checkpoint``).

    The sections are converted (and resolved) once, at construction, so build it inside the Hydra app:
    ``ConfigInCheckpoint(cfg)`` with the composed config.

    Args:
        config: the composed run config (a ``DictConfig`` or a mapping).
        keys: the top-level sections to store.
        fold: the fold this trainer fits, stored as ``data.fold`` (``train.py`` runs every fold from one
            config, whose own ``data.fold`` is only the default).
    """

    def __init__(self, config: Mapping | DictConfig, keys: Sequence[str] = ("model", "data"),
                 fold: int | None = None) -> None:
        self.sections = plain_sections(config, keys)
        if fold is not None and isinstance(self.sections.get("data"), dict):
            self.sections["data"]["fold"] = fold

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = {"version": CONFIG_VERSION, **self.sections}
