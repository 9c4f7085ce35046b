"""Hand-crafted texture descriptors of whole images, chosen by name from a registry; not in Bai et al. 2024.

:class:`callbacks.PseudoLabelReassigner` can cluster a descriptor beside the network's features (``descriptor=``): a
fixed description of each image's texture that does not drift with the network being trained, so k-means on the two
together finds what the descriptor separates from the first reassignment on.

* ``lbp_moments``: rotation-invariant uniform local binary patterns (LBP^riu2, Ojala, Pietikainen and Maenpaa,
  "Multiresolution gray-scale and rotation invariant texture classification with local binary patterns", TPAMI
  2002, eq. 10) of 8 neighbours at radii 1, 2, 3 and 5 px, one 10-bin histogram per radius, and the image's
  intensity mean, standard deviation, skewness and kurtosis: 44 numbers per image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch

TEXTURE_DESCRIPTORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}


def register(name: str) -> Callable:
    def wrap(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        TEXTURE_DESCRIPTORS[name] = fn
        return fn

    return wrap


def texture_descriptor(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The registered descriptor ``name``: a function of a batch of images (B x C x H x W) to B x D float32."""
    if name not in TEXTURE_DESCRIPTORS:
        raise ValueError(f"unknown texture descriptor {name!r}; choose from {sorted(TEXTURE_DESCRIPTORS)}")
    return TEXTURE_DESCRIPTORS[name]


@functools.cache
def riu2_codes(neighbours: int) -> torch.Tensor:
    """The LBP^riu2 code of every ``neighbours``-bit pattern (bit p: neighbour p >= centre), as a lookup table."""
    codes = []
    for pattern in range(2**neighbours):
        bits = [(pattern >> p) & 1 for p in range(neighbours)]
        transitions = sum(bits[p] != bits[p - 1] for p in range(neighbours))
        codes.append(sum(bits) if transitions <= 2 else neighbours + 1)
    return torch.tensor(codes, dtype=torch.long)


def lbp_riu2_histogram(gray: torch.Tensor, radius: int, neighbours: int = 8) -> torch.Tensor:
    """The LBP^riu2 histogram (``neighbours + 2`` bins, fractions of the pixels) of each image of ``gray`` (B x H x W).

    Each pixel's ``neighbours`` samples on a circle of ``radius`` px (taken at the nearest pixel, no
    interpolation) are thresholded at the centre's value (>=). A pattern with at most two 0/1 transitions around
    the circle ("uniform") is coded by its count of ones (0..P); every other pattern shares code P + 1 (eq. 10).
    Rotating the image by a multiple of 360/P degrees rotates the circle and leaves the code unchanged, and any
    increasing change of the grey levels leaves it unchanged too.
    """
    height, width = gray.shape[-2:]
    if min(height, width) <= 2 * radius:
        raise ValueError(f"an LBP of radius {radius} needs images larger than {2 * radius} px, got {height}x{width}")
    angles = [2 * math.pi * p / neighbours for p in range(neighbours)]
    offsets = [(round(-radius * math.sin(a)), round(radius * math.cos(a))) for a in angles]
    centre = gray[:, radius:height - radius, radius:width - radius]
    pattern = torch.zeros(centre.shape, dtype=torch.long, device=gray.device)
    for bit, (dy, dx) in enumerate(offsets):
        pattern |= (gray[:, radius + dy:height - radius + dy, radius + dx:width - radius + dx] >= centre).long() << bit
    codes = riu2_codes(neighbours).to(gray.device)[pattern.flatten(1)]
    counts = torch.zeros(gray.shape[0], neighbours + 2, device=gray.device).scatter_add_(
        1, codes, torch.ones_like(codes, dtype=torch.float32))
    return counts / codes.shape[1]


def intensity_moments(gray: torch.Tensor) -> torch.Tensor:
    """Mean, standard deviation, skewness and kurtosis of each image's grey levels (B x H x W -> B x 4)."""
    flat = gray.flatten(1)
    mean, std = flat.mean(1), flat.std(1, unbiased=False)
    z = (flat - mean[:, None]) / std.clamp_min(1e-6)[:, None]
    return torch.stack([mean, std, z.pow(3).mean(1), z.pow(4).mean(1)], dim=1)


def lbp_and_moments(images: torch.Tensor, radii: Sequence[int] = (1, 2, 3, 5), neighbours: int = 8) -> torch.Tensor:
    """LBP^riu2 histograms at ``radii`` and the intensity moments of each image (the channels averaged)."""
    gray = images.float().mean(1)
    return torch.cat([*(lbp_riu2_histogram(gray, r, neighbours) for r in radii), intensity_moments(gray)], dim=1)


register("lbp_moments")(lbp_and_moments)
