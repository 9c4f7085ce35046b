"""Multi-view augmentation of Bai et al. (2024) 3.2.1: global and local random crops of one image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


class MultiCropViews:
    """``n_global`` crops of ``global_size`` and ``n_local`` crops of ``local_size`` from one image.

    Each view gets colour (brightness/contrast) jitter, horizontal and vertical flips, random grayscale
    (a no-op on one channel) and Gaussian blur. Input: a float image (C, H, W) in [0, 1]. Output: a list
    of views, globals first; every view of an image carries that image's pseudo-label.
    """

    per_batch = False  # views of one image, made in the loader (see BatchedMultiCropViews)

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
        self.scales = [tuple(global_scale)] * n_global + [tuple(local_scale)] * n_local
        self.jitter, self.blur_p, self.gray_p = jitter, blur_p, gray_p

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.global_view(image) for _ in range(self.n_global)] + [
            self.local_view(image) for _ in range(self.n_local)
        ]


def random_resized_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                         ratio: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10,
                         generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` crop boxes ``(x1, y1, x2, y2)`` in pixels, drawn as torchvision's ``RandomResizedCrop.get_params``
    draws one: an area fraction uniform in ``scale`` and a log-uniform aspect ratio, the first of ``tries`` draws
    that fits the image, else the whole image (cut to ``ratio``), centred; then a uniform position."""
    area = height * width
    u = torch.rand(n, tries, 2, generator=generator, device=device)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(1, keepdim=True)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    in_ratio = width / height
    fb_w = width if in_ratio <= ratio[1] else round(height * ratio[1])
    fb_h = height if in_ratio >= ratio[0] else round(width / ratio[0])
    found = fits.any(1)
    w = torch.where(found, w, torch.full_like(w, fb_w))
    h = torch.where(found, h, torch.full_like(h, fb_h))
    pos = torch.rand(n, 2, generator=generator, device=device)
    # torchvision: randint(0, H - h + 1); the fallback is centred
    y1 = torch.where(found, (pos[:, 0] * (height - h + 1)).floor(), ((height - h) / 2).floor())
    x1 = torch.where(found, (pos[:, 1] * (width - w + 1)).floor(), ((width - w) / 2).floor())
    return torch.stack([x1, y1, x1 + w, y1 + h], 1)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """One normalised 1-D Gaussian kernel of ``size`` taps per ``sigma`` (as torchvision's ``gaussian_blur``)."""
    x = torch.linspace(-(size - 1) / 2, (size - 1) / 2, size, device=sigma.device)
    k = torch.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(1, keepdim=True)


class BatchedMultiCropViews(MultiCropViews):
    """:class:`MultiCropViews` for a whole batch at once, on the batch's device.

    The same views and parameters (random resized crops with torchvision's area and aspect draws, flips,
    brightness/contrast jitter in a random order with probability 0.8, random grayscale, Gaussian blur with
    sigma in [0.1, 2]), drawn per image from ``generator``. The DataModule makes them after the batch reached
    the training device (``on_after_batch_transfer``): on a GPU the loader then only ships decoded images
    instead of cropping 8 views of every image in its workers. One difference: crops are resampled with
    ``torchvision.ops.roi_align`` (bilinear, averaging ``ceil(box / size)`` samples per output pixel when it
    shrinks) instead of an antialiased resize.

    Call: ``views(images, generator)`` with float images (B, C, H, W) in [0, 1]; returns the list of
    ``n_global + n_local`` view batches, globals first.
    """

    per_batch = True

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [self.view(images, size, scale, generator) for size, scale in zip(self.sizes, self.scales, strict=True)]

    def view(self, images: torch.Tensor, size: int, scale: tuple[float, float],
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One view of every image: crop, flips, jitter, grayscale, blur."""
        n, _, height, width = images.shape
        dev = images.device

        def chance(p: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator, device=dev) < p)[:, None, None, None]

        boxes = random_resized_boxes(n, height, width, scale, generator=generator, device=dev)
        rois = torch.cat([torch.arange(n, device=dev, dtype=boxes.dtype)[:, None], boxes], 1)
        x = roi_align(images, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        x = torch.where(chance(0.5), x.flip(-1), x)
        x = torch.where(chance(0.5), x.flip(-2), x)
        x = torch.where(chance(0.8), self.color_jitter(x, generator), x)
        if x.shape[1] == 3:
            x = torch.where(chance(self.gray_p), TF.rgb_to_grayscale(x, num_output_channels=3), x)
        return torch.where(chance(self.blur_p), self.blur(x, generator), x)

    def color_jitter(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Brightness and contrast factors uniform in [1 - jitter, 1 + jitter], applied in a random order."""
        n = x.shape[0]
        lo, hi = max(0.0, 1.0 - self.jitter), 1.0 + self.jitter
        b, c, order = torch.rand(3, n, 1, 1, 1, generator=generator, device=x.device)
        b, c = lo + (hi - lo) * b, lo + (hi - lo) * c

        def brightness(y: torch.Tensor) -> torch.Tensor:
            return (y * b).clamp(0, 1)

        def contrast(y: torch.Tensor) -> torch.Tensor:
            mean = TF.rgb_to_grayscale(y).mean((1, 2, 3), keepdim=True)
            return (c * y + (1 - c) * mean).clamp(0, 1)

        return torch.where(order < 0.5, contrast(brightness(x)), brightness(contrast(x)))

    def blur(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Separable Gaussian blur, reflect padding, one sigma uniform in [0.1, 2] per image."""
        n, ch, height, width = x.shape
        size = max(3, height // 20 * 2 + 1)
        sigma = 0.1 + 1.9 * torch.rand(n, generator=generator, device=x.device)
        k = gaussian_kernels(sigma, size).to(x.dtype).repeat_interleave(ch, 0)  # (n * ch, size)
        y = F.pad(x.reshape(1, n * ch, height, width), [size // 2] * 4, mode="reflect")
        y = F.conv2d(y, k[:, None, :, None], groups=n * ch)
        y = F.conv2d(y, k[:, None, None, :], groups=n * ch)
        return y.reshape(n, ch, height, width)

