"""Batch augmentation by step: quarter turns and flips drawn from the global step alone, so that a resumed run
sees the same augmentation (the weak method and the image-classifier baseline share it)."""

from __future__ import annotations

import torch


def augmentation_at(step: int, rotate: bool, flip: bool) -> tuple[int, bool, bool]:
    """(quarter turns, horizontal flip, vertical flip) of the batch at ``step``."""
    draws = torch.randint(4, (3,), generator=torch.Generator().manual_seed(step)).tolist()
    turns = draws[0] if rotate else 0
    return turns, flip and draws[1] % 2 == 1, flip and draws[2] % 2 == 1


def augment(x: torch.Tensor, turns: int, hflip: bool, vflip: bool) -> torch.Tensor:
    """``x`` (N, C, H, W) turned by ``turns`` quarter turns, then flipped."""
    if turns:
        x = torch.rot90(x, turns, dims=(2, 3))
    dims = [d for d, on in ((3, hflip), (2, vflip)) if on]
    return torch.flip(x, dims) if dims else x
