"""A timm backbone by name, from scratch or from a local checkpoint file (never from a hub)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
from torch import nn


def create_backbone(name: str = "convnextv2_tiny", in_chans: int = 1, checkpoint_path: str | None = None,
                    drop_path_rate: float = 0.0) -> nn.Module:
    """``timm.create_model(name)`` without its classifier (``num_classes=0``: it returns pooled features).

    ``checkpoint_path`` initialises the weights from a local file through timm's own loader
    (``pretrained_cfg_overlay=dict(file=...)``), which also adapts a 3-channel stem to ``in_chans=1``
    (grayscale) and drops the checkpoint's classifier. Nothing is downloaded.
    """
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if checkpoint_path:
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(f"backbone checkpoint {path} does not exist")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    return timm.create_model(name, pretrained=False, **kwargs)


#: the keys a backbone config node may hold (``model.backbone.name=...``, ``model.backbone.checkpoint_path=...``)
BACKBONE_KEYS = ("name", "checkpoint_path", "drop_path_rate")


def backbone_from_config(backbone: str | Mapping[str, Any], in_chans: int = 1, checkpoint_path: str | None = None,
                         drop_path_rate: float = 0.0) -> nn.Module:
    """:func:`create_backbone` from the ``model.backbone`` config: a node ``{name, checkpoint_path,
    drop_path_rate}`` or just a model name (``model.backbone=resnet50``). ``checkpoint_path`` and
    ``drop_path_rate`` given beside it (the module's own arguments, as in older configs) apply where the node
    does not set them."""
    spec: dict[str, Any] = {"name": backbone} if isinstance(backbone, str) else dict(backbone)
    unknown = sorted(set(spec) - set(BACKBONE_KEYS))
    if unknown or "name" not in spec:
        raise ValueError(f"model.backbone {spec}: expected a timm model name or a node with keys {BACKBONE_KEYS} "
                         f"(name required){'; unknown: ' + ', '.join(unknown) if unknown else ''}")
    path = spec["checkpoint_path"] if spec.get("checkpoint_path") is not None else checkpoint_path
    rate = spec["drop_path_rate"] if spec.get("drop_path_rate") is not None else drop_path_rate
    return create_backbone(spec["name"], in_chans, path, rate)
