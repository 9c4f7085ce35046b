"""A timm backbone by name, from scratch or from a local checkpoint file (never from a hub)."""

from __future__ import annotations

from pathlib import Path

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
