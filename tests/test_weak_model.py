"""The networks, the weak loss and alpha (Eq. 3-6), checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_modules.weak import DecisionNet, WeakDefectNet, collaborative_alpha, weak_loss
from lightning_modules.weak.networks import MirrorPad


@pytest.mark.parametrize("size", [(64, 32), (96, 40), (1408 // 8, 512 // 8)])
def test_heatmap_is_an_eighth_of_the_input_and_in_unit_interval(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = WeakDefectNet(lnet_wide=16).eval()
    with torch.no_grad():
        heatmap, logits = net(torch.rand(2, 1, *size))
    assert heatmap.shape == (2, 1, size[0] // 8, size[1] // 8)
    assert float(heatmap.min()) >= 0.0 and float(heatmap.max()) <= 1.0
    assert logits.shape == (2,)


def test_shared_layers_and_lnet_use_mirror_padding_dnet_does_not() -> None:
    net = WeakDefectNet(lnet_wide=16)
    for part in (net.trunk, net.lnet.body):
        convs = [m for m in part.modules() if isinstance(m, nn.Conv2d)]
        pads = [m for m in part.modules() if isinstance(m, MirrorPad)]
        assert convs and len(pads) == len(convs) and all(c.padding == (0, 0) for c in convs)
    assert not [m for m in net.dnet.modules() if isinstance(m, MirrorPad)]
    kernels = [c.kernel_size for c in net.lnet.modules() if isinstance(c, nn.Conv2d)]
    assert kernels == [(5, 5), (5, 5), (15, 15), (1, 1)]  # Table 2


def test_lnet_wide_kernel_is_configurable_and_keeps_the_heatmap_size() -> None:
    net = WeakDefectNet(lnet_wide=16, lnet_kernel=5).eval()
    kernels = [c.kernel_size for c in net.lnet.modules() if isinstance(c, nn.Conv2d)]
    assert kernels == [(5, 5), (5, 5), (5, 5), (1, 1)]
    with torch.no_grad():
        heatmap, _ = net(torch.rand(1, 1, 96, 40))
    assert heatmap.shape == (1, 1, 12, 5)


def test_reflect_padding_mirrors_the_border() -> None:
    """A 5x5 mirror-padded convolution of a left-right ramp sees the mirrored ramp at the border."""
    conv = nn.Conv2d(1, 1, 5, bias=False)
    nn.init.zeros_(conv.weight)
    with torch.no_grad():
        conv.weight[0, 0, 2, 0] = 1.0  # picks the pixel two to the left
    ramp = torch.arange(6.0).repeat(6, 1)[None, None]
    out = conv(MirrorPad(2)(ramp))
    assert out.shape == ramp.shape
    assert out[0, 0, 0, :3].tolist() == [2.0, 1.0, 0.0]  # mirrored, not zeros


def test_bf16_autocast_runs_the_convolutions_in_bf16_and_the_outputs_in_float32() -> None:
    """``trainer.precision=bf16-mixed``: the trunk is bf16 (the speed-up), heat map and logits stay float32."""
    torch.manual_seed(0)
    net = WeakDefectNet(lnet_wide=16).eval()
    x = torch.rand(4, 1, 64, 32)
    seen: list[torch.dtype] = []
    net.trunk.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with torch.no_grad():
        heat32, logits32 = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            heat, logits = net(x)
    assert seen == [torch.float32, torch.bfloat16]
    assert heat.dtype == logits.dtype == torch.float32
    assert torch.allclose(logits, logits32, atol=0.05) and torch.allclose(heat, heat32, atol=0.02)


def test_rsam_is_features_times_heatmap_plus_features() -> None:
    features = torch.full((1, 2, 2, 2), 3.0)
    heatmap = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
    out = DecisionNet.rsam(features, heatmap)
    assert torch.allclose(out[0, 0], torch.tensor([[3.0, 4.5], [6.0, 3.75]]))


def test_weak_loss_matches_eq_3_to_5_by_hand() -> None:
    heatmap = torch.stack([torch.full((1, 4, 4), 0.3), torch.full((1, 4, 4), 0.2)])
    labels = torch.tensor([1.0, 0.0])
    l_pos = 0.3 * math.log(0.3) + 0.7 * math.log(0.7)  # Eq. 3
    l_neg = -math.log(0.8)  # Eq. 4
    assert float(weak_loss(heatmap, labels, alpha=8.0)) == pytest.approx(8.0 * l_neg + l_pos, abs=1e-5)  # Eq. 5
    assert float(weak_loss(heatmap, labels, alpha=1.0)) == pytest.approx(l_neg + l_pos, abs=1e-5)


def test_weak_loss_uses_the_mean_of_the_map() -> None:
    heatmap = torch.zeros(1, 1, 2, 2)
    heatmap[0, 0, 0, 0] = 1.0  # Q = 0.25
    expected = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    assert float(weak_loss(heatmap, torch.tensor([1.0]), alpha=8.0)) == pytest.approx(expected, abs=1e-5)


def test_weak_loss_keeps_a_gradient_on_a_saturated_map() -> None:
    heat = torch.zeros(1, 1, 4, 4, requires_grad=True)
    weak_loss(heat, torch.tensor([1.0]), alpha=8.0).backward()
    assert heat.grad is not None and float(heat.grad.abs().sum()) > 0


def test_collaborative_alpha_matches_eq_6() -> None:
    # N = 120 iterations, n = 30: k = 4 updates; alpha_i = 8 (cos(2 pi i / 4) + 3) / 4
    assert [collaborative_alpha(it, 120, 8.0, 30) for it in (0, 29, 30, 60, 90)] == pytest.approx(
        [8.0, 8.0, 6.0, 4.0, 6.0]
    )
    # the paper's stage 1: N = 750, n = 30, k = 25
    i = 12
    expected = 8.0 * (math.cos(2 * math.pi * i / 25) + 3) / 4
    assert collaborative_alpha(i * 30 + 7, 750, 8.0, 30) == pytest.approx(expected)
    assert min(collaborative_alpha(it, 750) for it in range(750)) >= 4.0
