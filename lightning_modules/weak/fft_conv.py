"""LNet's 15x15 convolution through the FFT along the rows: the same layer, about a quarter of the operations.

A valid (unpadded) cross-correlation of a ``W``-wide input with a ``k``-wide kernel is, along one axis, a product of
spectra (the convolution theorem): with ``X`` the length-``W`` real FFT of an input row and ``K`` that of the
kernel's row zero-padded to ``W``, ``irfft(X * conj(K))`` holds the correlation, whose first ``W - k + 1`` values
do not wrap around. Along the rows (width) this module uses that; along the columns (height) it keeps the sliding
sum, done as one matrix product per frequency::

    Y[n, o, i, v] = sum_{c, a} X[n, c, i + a, v] * conj(K[o, c, a, v])     (v: the W // 2 + 1 frequencies)

that is ``(n * out_h, c_in * k) @ (c_in * k, c_out)`` per frequency, in complex numbers (four real products). The
direct convolution costs ``2 k^2 c_in c_out`` per output pixel; this costs about ``8 k c_in c_out (W / 2 + 1) /
out_w``: for k = 15 about a quarter. The kernel's spectrum is two real matrix products with the DFT rows of its
``k`` taps. Everything is differentiable PyTorch (autograd derives the backward pass), float32, and equal to
``F.conv2d`` to float rounding (``tests/test_fft_conv.py``).

A full 2-D FFT cuts the operations further, but its per-frequency weights (``c_in * c_out`` complex numbers per
frequency of a 2-D grid) are tens of times the kernel's size; at LNet's 512 output channels writing and reading
them cost more than the direct convolution saves. For 5x5 kernels neither pays (``benchmarks/notes/cpu_speed.md``).

:class:`RowFFTConv2d` is an ``nn.Conv2d`` (the same weights and checkpoints) that takes this path for float32
kernels of at least ``min_kernel`` taps, and the direct path when scripted or exported (ONNX and TorchScript keep
the standard convolution), under autocast (bf16 CPUs run the direct convolution natively) and for other dtypes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn


@lru_cache(maxsize=32)
def dft_rows(size: int, taps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``2 pi v b / size`` for the frequencies ``v <= size // 2`` and taps ``b < taps``: the real
    and imaginary parts of conj(rfft(t, n=size)) = ``(cos + i sin) @ t`` for a real row ``t`` of ``taps`` values."""
    angle = torch.outer(torch.arange(size // 2 + 1, dtype=torch.float64), torch.arange(taps, dtype=torch.float64))
    angle = angle * (2 * math.pi / size)
    return torch.cos(angle).float(), torch.sin(angle).float()


def kernel_row_spectrum(weight: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of conj(rfft(weight, n=width)) along the kernel's width, each laid out as one
    ``(c_in * k_h, c_out)`` matrix per frequency: ``(width // 2 + 1, c_in * k_h, c_out)``."""
    c_out, c_in, kh, kw = weight.shape
    cos, sin = (t.to(weight.device) for t in dft_rows(width, kw))
    # (b, (c, a), o): a blocked 2-D transpose, then whole rows of c_out moved (cheaper than one permute)
    taps = weight.reshape(c_out, -1).t().contiguous().view(c_in * kh, kw, c_out).transpose(0, 1)
    taps = taps.reshape(kw, c_in * kh * c_out)
    shape = (cos.shape[0], c_in * kh, c_out)
    return torch.matmul(cos, taps).view(shape), torch.matmul(sin, taps).view(shape)


def row_fft_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding or dilation, one group) with the FFT along the rows."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    out_h, out_w = h - kh + 1, w - kw + 1
    w_re, w_im = kernel_row_spectrum(weight, w)
    freqs = w_re.shape[0]
    spectrum = torch.fft.rfft(x, n=w)  # (n, c_in, h, freqs)
    # per frequency the sliding windows along the height, real parts stacked over imaginary: (freqs, 2 n out_h, c k)
    parts = torch.stack([spectrum.real, spectrum.imag]).permute(4, 0, 1, 3, 2)  # (freqs, 2, n, h, c_in)
    windows = parts.unfold(3, kh, 1).reshape(freqs, 2 * n * out_h, c_in * kh)  # window order (c, a) as the weights'
    a, b = torch.matmul(windows, w_re), torch.matmul(windows, w_im)
    m = n * out_h
    product = torch.complex(a[:, :m] - b[:, m:], b[:, :m] + a[:, m:])  # X * conj(K): (freqs, n out_h, c_out)
    product = product.view(freqs, n, out_h, c_out).permute(1, 3, 2, 0)
    out = torch.fft.irfft(product, n=w)[..., :out_w]
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class RowFFTConv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride 1, unpadded, one group) computed by :func:`row_fft_conv2d` where that is cheaper.

    The direct convolution is kept for kernels narrower than ``min_kernel``, when scripted or exported, under
    autocast and for other dtypes than float32.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 min_kernel: int = 9) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self.min_kernel = min_kernel

    @torch.jit.unused
    def use_fft(self, x: torch.Tensor) -> bool:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            return False
        if x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
            return False
        return min(self.kernel_size) >= self.min_kernel and x.shape[-1] >= self.kernel_size[1]

    @torch.jit.unused
    def fft_forward(self, x: torch.Tensor) -> torch.Tensor:
        return row_fft_conv2d(x, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._conv_forward(x, self.weight, self.bias)
        if self.use_fft(x):
            return self.fft_forward(x)
        return self._conv_forward(x, self.weight, self.bias)

