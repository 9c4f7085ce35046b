"""Pictures of LNet heat maps: input, ground-truth mask (when there is one) and heat-map overlay side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image


def heatmap_panel(image: torch.Tensor, mask: torch.Tensor | None, heatmap: torch.Tensor) -> np.ndarray:
    """An RGB uint8 panel [input | mask | overlay] from a (1,H,W) or (3,H,W) image in [0,1], mask and (1,h,w)
    heat map (upsampled to the image); without a mask (``None``, e.g. at prediction time) [input | overlay]."""
    height, width = image.shape[-2:]
    pixels = image.detach().float().cpu().reshape(-1, height, width).clamp(0, 1)
    rgb = pixels.expand(3, height, width).permute(1, 2, 0).numpy()
    heat = F.interpolate(heatmap.detach().float().cpu().reshape(1, 1, *heatmap.shape[-2:]), size=(height, width),
                         mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
    overlay = 0.5 * rgb + 0.5 * colormaps["jet"](heat)[..., :3]
    gap = np.ones((height, 4, 3))
    parts = [rgb, gap]
    if mask is not None:
        parts += [np.repeat(mask.detach().cpu().reshape(height, width).float().numpy()[..., None], 3, axis=2), gap]
    panel = np.concatenate([*parts, overlay], axis=1)
    return (panel * 255).round().astype(np.uint8)


def save_heatmap_panel(path: str | Path, image: torch.Tensor, mask: torch.Tensor | None,
                       heatmap: torch.Tensor) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(heatmap_panel(image, mask, heatmap)).save(path)
    return path
