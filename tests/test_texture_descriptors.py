"""Hand-crafted texture descriptors (clustering/descriptors.py): LBP^riu2 codes, invariances, moments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from clustering.descriptors import (
    TEXTURE_DESCRIPTORS,
    intensity_moments,
    lbp_riu2_histogram,
    riu2_codes,
    texture_descriptor,
)


def test_riu2_codes_count_the_ones_of_uniform_patterns_and_pool_the_rest() -> None:
    codes = riu2_codes(8)
    assert codes[0b00000000] == 0 and codes[0b11111111] == 8
    assert codes[0b00011100] == 3 and codes[0b10000001] == 2  # one run of ones, also across bit 7 -> bit 0
    assert codes[0b01010101] == 9 and codes[0b00100100] == 9  # 8 and 4 transitions: not uniform
    assert sorted(torch.bincount(codes).tolist()) == sorted([1, 8, 8, 8, 8, 8, 8, 8, 1, 198])  # 58 uniform of 256


def test_lbp_of_a_flat_image_and_of_one_pixel_stripes() -> None:
    flat = torch.full((1, 20, 20), 0.3)
    assert torch.equal(lbp_riu2_histogram(flat, 1), torch.eye(10)[8][None])  # every neighbour >= the centre
    stripes = (torch.arange(20) % 2).float().expand(20, 20)[None]  # columns 0, 1, 0, 1, ...
    # on a dark column every neighbour is >= (code 8); on a bright one only the two in its own column
    # (bits 2 and 6: four transitions, code 9); the 18 inner columns split evenly
    hist = lbp_riu2_histogram(stripes, 1)
    assert hist[0, 8] == pytest.approx(0.5) and hist[0, 9] == pytest.approx(0.5)


def test_descriptor_is_unchanged_by_quarter_turns_and_its_lbp_by_increasing_grey_maps() -> None:
    # grey levels k / 256: three equal channels average back to them exactly
    images = torch.randint(0, 256, (3, 1, 40, 40), generator=torch.Generator().manual_seed(0)) / 256
    describe = texture_descriptor("lbp_moments")
    described = describe(images)
    assert described.shape == (3, 44) and described.dtype == torch.float32
    assert torch.allclose(describe(images.rot90(1, (2, 3))), described, atol=1e-5)
    assert torch.allclose(describe(images.flip(3)), described, atol=1e-5)
    assert torch.equal(describe(images.pow(3) * 7 + 1)[:, :40], described[:, :40])  # the 4 LBP histograms
    assert torch.allclose(described[:, :40].reshape(3, 4, 10).sum(2), torch.ones(3, 4))
    assert torch.allclose(describe(images.expand(3, 3, 40, 40)), described)  # the channels averaged


def test_moments_match_scipy() -> None:
    gray = torch.rand(2, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).pow(2)
    flat = gray.flatten(1).numpy()
    expected = np.stack([flat.mean(1), flat.std(1), stats.skew(flat, axis=1), stats.kurtosis(flat, axis=1,
                                                                                              fisher=False)], 1)
    assert np.allclose(intensity_moments(gray).numpy(), expected)


def test_textures_lie_nearer_their_own_kind() -> None:
    """Vertical stripes of random phase, white noise and 8-px blocks: each image's descriptor is nearest to those
    of its own texture (the standardized 44 numbers, leave-one-out nearest neighbour)."""
    rng = np.random.default_rng(0)
    columns = np.arange(32)[None, :].repeat(32, 0)
    makers = [lambda: (columns + rng.integers(2)) % 2 * 0.8, lambda: rng.uniform(0, 0.8, (32, 32)),
              lambda: rng.uniform(0, 0.8, (4, 4)).repeat(8, 0).repeat(8, 1)]
    images = np.stack([make() + rng.normal(0, 0.01, (32, 32)) for make in makers for _ in range(5)])
    described = TEXTURE_DESCRIPTORS["lbp_moments"](torch.tensor(images, dtype=torch.float32)[:, None])
    z = (described - described.mean(0)) / described.std(0).clamp_min(1e-8)
    distances = torch.cdist(z, z).fill_diagonal_(float("inf"))
    assert torch.equal(distances.argmin(1) // 5, torch.arange(15) // 5)


def test_unknown_name_and_too_small_images_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown texture descriptor 'gabor'.*lbp_moments"):
        texture_descriptor("gabor")
    with pytest.raises(ValueError, match="radius 5 needs images larger than 10 px, got 10x12"):
        texture_descriptor("lbp_moments")(torch.rand(1, 1, 10, 12))
