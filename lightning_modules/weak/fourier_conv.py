"""LNet's 15x15 convolution in the Fourier domain along the rows: the same layer, about a quarter of the operations.

A valid (unpadded) cross-correlation of a ``W``-wide input row with a ``k``-tap kernel row is, by the convolution
theorem, ``idft(X * conj(K))`` with ``X`` and ``K`` the length-``W`` discrete Fourier transforms of the row and of the
zero-padded kernel; its first ``W - k + 1`` values do not wrap around. Along the rows (width) this module uses that;
along the columns (height) it keeps the sliding sum, one matrix product per frequency ``v``::

    Y[n, o, i, v] = sum_{c, a} X[n, c, i + a, v] * conj(K[o, c, a, v])      (v = 0 .. W // 2)

``(n * out_h, c_in * k) @ (c_in * k, c_out)`` per frequency in complex numbers (four real products). The direct
convolution costs ``2 k^2 c_in c_out`` operations per output pixel, this ``8 k c_in c_out (W // 2 + 1) / out_w``:
for k = 15 about a quarter. The transforms are short (``W`` is the map's width, 34 at the CPU preset's size), so
they are matrix products with cosine and sine tables, not FFTs: the whole layer is real matrix products, which
autograd differentiates, TorchScript scripts and the ONNX exporter writes as ``MatMul`` (int8 quantisation leaves
them float32). Equal to ``F.conv2d`` to float rounding (``tests/test_fourier_conv.py``).

A 2-D transform cuts the operations further, but its per-frequency weights (``c_in * c_out`` complex numbers per
frequency of a 2-D grid) are tens of times the kernel's size: at LNet's 512 output channels, writing and reading them
cost more than the direct convolution saves. For 5x5 kernels neither pays (``benchmarks/notes/cpu_speed.md``).

:class:`FourierRowConv2d` is an ``nn.Conv2d`` (the same weights and checkpoints) that takes this path for float32
inputs on the CPU and kernels of at least ``min_kernel`` taps, and the direct convolution under autocast (CPUs with
native bf16 run that natively), on GPUs (where cuDNN chooses its own algorithm; this path was not measured there)
and otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def dft_tables(width: int, taps: int, out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
    """The real DFT along a row of ``width`` values as matrices, for the ``width // 2 + 1`` frequencies ``v``:

    * ``forward`` (width, 2 * freqs): ``x @ forward`` = [Re X | Im X];
    * ``kernel`` (2 * freqs, taps): ``kernel @ t`` = [Re conj(K); Im conj(K)] for a kernel row ``t`` of ``taps``
      values at the start of the row;
    * ``inverse`` (2 * freqs, out): ``[Re Y | Im Y] @ inverse`` = the first ``out`` values of the inverse transform
      of the Hermitian spectrum ``Y`` (each frequency but 0 and width / 2 counted twice).
    """
    step = 2 * math.pi / width
    v = torch.arange(width // 2 + 1, dtype=torch.float64, device=device)
    along = torch.outer(torch.arange(width, dtype=torch.float64, device=device), v) * step
    forward = torch.cat([torch.cos(along), -torch.sin(along)], dim=1)
    taps_angle = torch.outer(v, torch.arange(taps, dtype=torch.float64, device=device)) * step
    kernel = torch.cat([torch.cos(taps_angle), torch.sin(taps_angle)])
    twice = 2.0 - (v == 0).double() - (2 * v == width).double()
    back = torch.outer(v, torch.arange(out, dtype=torch.float64, device=device)) * step
    inverse = torch.cat([torch.cos(back), -torch.sin(back)]) * (torch.cat([twice, twice]) / width).unsqueeze(1)
    return forward.float(), kernel.float(), inverse.float()


def fourier_row_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding or dilation, one group), Fourier along the rows."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    out_h, out_w = h - kh + 1, w - kw + 1
    freqs = w // 2 + 1
    k, m = c_in * kh, n * out_h
    forward, kernel, inverse = dft_tables(w, kw, out_w, x.device)
    # the kernel rows as (b, (c, a), o): a 2-D transpose, then whole rows of c_out moved (cheaper than one permute)
    taps = weight.reshape(c_out, -1).t().contiguous().view(k, kw, c_out).transpose(0, 1).reshape(kw, k * c_out)
    k_re = torch.matmul(kernel[:freqs], taps).view(freqs, k, c_out)
    k_im = torch.matmul(kernel[freqs:], taps).view(freqs, k, c_out)
    # per frequency, the windows of k_h rows: real parts of all windows stacked over imaginary parts, (c, a) order
    parts = torch.matmul(x, forward).view(n, c_in, h, 2, freqs).permute(4, 3, 0, 2, 1)  # (freqs, 2, n, h, c_in)
    windows = torch.stack([parts[:, :, :, a:a + out_h] for a in range(kh)], dim=-1).reshape(freqs, 2 * m, k)
    re, im = torch.matmul(windows, k_re), torch.matmul(windows, k_im)  # (freqs, 2m, c_out) each
    y_re = (re[:, :m] - im[:, m:]).reshape(freqs, m * c_out)  # X * conj(K), real part
    y_im = (im[:, :m] + re[:, m:]).reshape(freqs, m * c_out)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        # (out_w, m * c_out): its gradient flows back in the spectra's own layout
        out = torch.matmul(inverse[:freqs].t(), y_re) + torch.matmul(inverse[freqs:].t(), y_im)
        out = out.view(out_w, n, out_h, c_out).permute(1, 3, 2, 0)
    else:
        # inference: (m * c_out, out_w) from the spectra's transposes (a transposed operand, not a copy), so that the
        # rows of the result stay whole; the permute above cost 5% of an int8 image in ONNX Runtime, this one little
        out = torch.matmul(y_re.t(), inverse[:freqs]) + torch.matmul(y_im.t(), inverse[freqs:])
        out = out.view(n, out_h, c_out, out_w).transpose(1, 2)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class FourierRowConv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride 1, unpadded, one group) computed by :func:`fourier_row_conv2d` for float32 CPU inputs
    and kernels of at least ``min_kernel`` taps a side; the direct convolution otherwise and under autocast."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 min_kernel: int = 9) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self.min_kernel = min_kernel

    @torch.jit.unused
    def autocast_on(self, x: torch.Tensor) -> bool:
        return torch.is_autocast_enabled(x.device.type)

    def use_fourier(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or x.dtype != torch.float32:  # measured on CPUs only; GPUs keep cuDNN's choice
            return False
        if self.kernel_size[0] < self.min_kernel or self.kernel_size[1] < self.min_kernel:
            return False
        if torch.jit.is_scripting():  # a scripted model runs in float32
            return True
        return not self.autocast_on(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fourier(x):
            return fourier_row_conv2d(x, self.weight, self.bias)
        return self._conv_forward(x, self.weight, self.bias)
