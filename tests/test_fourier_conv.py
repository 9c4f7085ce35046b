"""LNet's Fourier path (lightning_modules/weak/fourier_conv.py) is the direct convolution to float rounding: outputs,
gradients, one training step of the whole network, the scripted layer; it steps aside for autocast and small
kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.cpu_speed import weak_train_step
from lightning_modules.weak.fourier_conv import FourierRowConv2d, fourier_row_conv2d
from lightning_modules.weak.networks import WeakDefectNet


@pytest.mark.parametrize(("shape", "kernel"), [((2, 6, 23, 22), 15), ((1, 3, 19, 31), 9), ((3, 4, 12, 10), (5, 7))])
def test_fourier_row_conv_equals_conv2d_with_gradients(shape: tuple[int, ...], kernel: int | tuple[int, int]) -> None:
    torch.manual_seed(0)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, shape[1], kh, kw, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    direct = F.conv2d(x, weight, bias)
    fast = fourier_row_conv2d(x.float(), weight.float(), bias.float())  # float32, its tables are float32
    assert fast.shape == direct.shape
    assert torch.allclose(fast.double(), direct, atol=1e-4 * direct.abs().max().item())
    grad = torch.randn_like(direct)
    expected = torch.autograd.grad(direct, (x, weight, bias), grad)
    got = torch.autograd.grad(fast, (x, weight, bias), grad.float())
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(g.double(), e, atol=1e-4 * e.abs().max().item())
    with torch.no_grad():  # inference takes another order of the inverse transform: the same layer
        inferred = fourier_row_conv2d(x.float(), weight.float(), bias.float())
    assert inferred.shape == direct.shape
    assert torch.allclose(inferred.double(), direct, atol=1e-4 * direct.abs().max().item())


def test_the_comparison_catches_a_wrong_spectrum() -> None:
    """The kernel mirrored (a convolution instead of a correlation) is far from F.conv2d at these tolerances."""
    torch.manual_seed(1)
    x, weight = torch.randn(1, 2, 20, 20), torch.randn(3, 2, 9, 9)
    assert not torch.allclose(fourier_row_conv2d(x, weight.flip(-1)), F.conv2d(x, weight), atol=1e-3)


def test_the_layer_takes_the_direct_path_where_the_fourier_path_does_not_apply() -> None:
    layer = FourierRowConv2d(2, 3, 15, bias=False)
    x = torch.randn(1, 2, 20, 20)
    assert layer.use_fourier(x)
    assert not FourierRowConv2d(2, 3, 5).use_fourier(x)  # small kernel
    assert not layer.use_fourier(x.double())
    assert not layer.use_fourier(x.to("meta"))  # not a CPU tensor
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer.use_fourier(x)


def test_the_scripted_layer_takes_the_fourier_path_with_the_same_outputs() -> None:
    layer = FourierRowConv2d(2, 3, 15)
    x = torch.randn(2, 2, 24, 30)
    scripted = torch.jit.script(layer)
    assert "aten::matmul" in str(scripted.inlined_graph)
    assert torch.allclose(scripted(x), F.conv2d(x, layer.weight, layer.bias), atol=1e-4)


def test_one_training_step_of_the_network_matches_the_direct_network() -> None:
    """The same weights and pair: the first loss, and the loss after one SGD step, agree to float rounding."""
    torch.manual_seed(0)
    initial = WeakDefectNet(lnet_wide=16).state_dict()
    pair = torch.rand(2, 1, 96, 80)
    losses = {}
    for fourier in (False, True):
        net = WeakDefectNet(lnet_wide=16, lnet_fourier=fourier)
        net.load_state_dict(initial)
        step = weak_train_step(net, pair)
        losses[fourier] = (float(step()), float(step()))
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert isinstance(WeakDefectNet().lnet.body[2][1], FourierRowConv2d)  # the default network takes this path
