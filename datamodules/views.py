"""Multi-view augmentation of Bai et al. (2024) 3.2.1: global and local random crops of one image."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


class MultiCropViews:
    """``n_global`` crops of ``global_size`` and ``n_local`` crops of ``local_size`` from one image.

    Each view gets colour (brightness/contrast) jitter, horizontal and vertical flips, random grayscale
    (a no-op on one channel) and Gaussian blur. Input: a float image (C, H, W) in [0, 1]. Output: a list
    of views, globals first; every view of an image carries that image's pseudo-label.
    """

    def __init__(self, global_size: int = 200, local_size: int = 96, n_global: int = 2, n_local: int = 6,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 jitter: float = 0.4, blur_p: float = 0.5, gray_p: float = 0.2) -> None:
        def pipeline(size: int, scale: tuple[float, float]) -> v2.Compose:
            return v2.Compose([
                v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                v2.RandomApply([v2.ColorJitter(brightness=jitter, contrast=jitter)], p=0.8),
                v2.RandomGrayscale(p=gray_p),
                v2.RandomApply([v2.GaussianBlur(kernel_size=max(3, size // 20 * 2 + 1), sigma=(0.1, 2.0))], p=blur_p),
            ])

        self.global_view = pipeline(global_size, global_scale)
        self.local_view = pipeline(local_size, local_scale)
        self.n_global, self.n_local = n_global, n_local
        self.sizes = [global_size] * n_global + [local_size] * n_local

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.global_view(image) for _ in range(self.n_global)] + [
            self.local_view(image) for _ in range(self.n_local)
        ]
