"""The networks of Xu et al. (2020), section III: shared layers, LNet (Table 2) and DNet with RSAM.

Choices where the paper is silent or inconsistent, stated once here:

* Shared layers (Table 1): two 5x5/32 convolutions, max-pool, three 5x5/64, max-pool, four 5x5/64,
  max-pool, so the trunk and the heat map are at 1/8 of the input (the paper's LNet output size). Each
  convolution is followed by batch normalization and ReLU (``norm="none"`` drops the normalization).
* Mirror padding (``padding_mode="reflect"``) in the shared layers and LNet, as the paper asks; DNet uses
  zero padding.
* DNet's fully connected layer: the paper's text and figure disagree on its width (the "266-node"
  layer). We feed it the global average of the 256 DNet channels plus the global average and the global
  maximum of the heat map (258 inputs) and map them to one logit; the sigmoid of that logit is the
  defect probability.
* Mixed precision (``trainer.precision=bf16-mixed``): the convolutions run in bfloat16, but LNet's 1x1 output
  convolution, DNet's pooling and its fully connected layer run in float32 (:func:`in_float32`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.weak.fourier_conv import FourierRowConv2d

#: Table 1 as used here: output channels of each convolution, one tuple per block ending in a max-pool
TRUNK_WIDTHS: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64, 64), (64, 64, 64, 64))


def in_float32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32, also inside an autocast region (mixed-precision training and testing).

    bfloat16 keeps about 3 significant digits: the heat map would come out quantized and DNet's logits of
    defect-free parts, which sit within ~0.1 of one value, would tie. The output layers are tiny, so float32
    costs nothing there. Not scriptable (a module as an argument, autocast): callers skip it under TorchScript.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return layer(x.float())


class MirrorPad(nn.Module):
    """Mirror (reflect) padding by ``pad`` on each side; on maps too small to mirror, edge replication."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if min(x.shape[-2:]) > self.pad else "replicate"
        return F.pad(x, (self.pad,) * 4, mode=mode)


class HalvingPool(nn.Module):
    """2x2 max-pooling that leaves a dimension already down to 1 as it is (for small inputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = (min(2, x.shape[-2]), min(2, x.shape[-1]))
        return F.max_pool2d(x, kernel)


def conv_bn_relu(cin: int, cout: int, kernel: int, padding_mode: str = "zeros", norm: str = "batch",
                 fourier: bool = False) -> nn.Sequential:
    """Convolution ("same" size), batch norm, ReLU; ``padding_mode="reflect"`` pads by mirroring; ``fourier``
    (mirror padding only) computes the convolution in the Fourier domain along the rows (:class:`FourierRowConv2d`,
    the same weights)."""
    if padding_mode == "reflect":
        conv = FourierRowConv2d if fourier else nn.Conv2d
        layers: list[nn.Module] = [MirrorPad(kernel // 2), conv(cin, cout, kernel, bias=norm == "none")]
    else:
        layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=norm == "none")]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SharedTrunk(nn.Module):
    """Table 1: the layers LNet and DNet share; output stride 8."""

    def __init__(
        self, in_channels: int = 1, widths: Sequence[Sequence[int]] = TRUNK_WIDTHS, norm: str = "batch"
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for block in widths:
            for cout in block:
                layers.append(conv_bn_relu(cin, cout, 5, "reflect", norm))
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LocalizationNet(nn.Module):
    """Table 2: 5x5/64, 5x5/64, 15x15/512, then 1x1 to one channel; returns heat-map *logits*.

    The sigmoid of the logits is the heat map H in [0, 1], at the trunk's resolution (1/8 of the input).
    ``fourier``: the wide convolution in the Fourier domain along the rows where its kernel has 9 taps or more (the
    same layer to float rounding, with a fraction of the operations; measured speed-ups in docs/cpu.md;
    :mod:`lightning_modules.weak.fourier_conv`).
    """

    def __init__(self, in_channels: int = 64, width: int = 64, wide: int = 512, wide_kernel: int = 15,
                 norm: str = "batch", fourier: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, width, 5, "reflect", norm),
            conv_bn_relu(width, width, 5, "reflect", norm),
            conv_bn_relu(width, wide, wide_kernel, "reflect", norm, fourier=fourier),
        )
        self.head = nn.Conv2d(wide, 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.body(features)
        if torch.jit.is_scripting():
            return self.head(x)
        return in_float32(self.head, x)


class DecisionNet(nn.Module):
    """DNet: the residual spatial attention module (RSAM), four convolutions, pooling, one FC.

    RSAM re-weights the trunk features with the heat map and keeps the original: F' = F * H + F. Then
    convolutions of 64, 64, 128 and 256 channels with three max-pools, global average pooling of the
    features, global average and max pooling of the heat map, and a fully connected layer to one logit.
    """

    def __init__(self, in_channels: int = 64, widths: Sequence[int] = (64, 64, 128, 256), norm: str = "batch") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            layers.append(conv_bn_relu(cin, cout, 3, "zeros", norm))
            if i < len(widths) - 1:
                layers.append(HalvingPool())
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin + 2, 1)

    @staticmethod
    def rsam(features: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        """Residual spatial attention: F * H + F."""
        return features * heatmap + features

    def forward(self, features: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        # pooled in float32 (see in_float32); the heat map already is float32 (LNet's head runs in float32)
        x = self.body(self.rsam(features, heatmap)).float()
        pooled = torch.cat(
            [x.mean(dim=(2, 3)), heatmap.mean(dim=(2, 3)), heatmap.amax(dim=(2, 3))], dim=1
        )
        if torch.jit.is_scripting():
            return self.fc(pooled).squeeze(1)
        return in_float32(self.fc, pooled).squeeze(1)


class WeakDefectNet(nn.Module):
    """Trunk + LNet + DNet. ``forward`` returns the heat map H (N,1,h,w) in [0,1] and DNet's logits (N,)."""

    def __init__(self, in_channels: int = 1, norm: str = "batch", lnet_wide: int = 512, lnet_kernel: int = 15,
                 trunk_widths: Sequence[Sequence[int]] = TRUNK_WIDTHS, lnet_fourier: bool = True) -> None:
        super().__init__()
        self.trunk = SharedTrunk(in_channels, trunk_widths, norm)
        self.lnet = LocalizationNet(self.trunk.out_channels, wide=lnet_wide, wide_kernel=lnet_kernel, norm=norm,
                                    fourier=lnet_fourier)
        self.dnet = DecisionNet(self.trunk.out_channels, norm=norm)

    def localize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk features and the heat map H = sigmoid(LNet)."""
        features = self.trunk(x)
        return features, torch.sigmoid(self.lnet(features))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, heatmap = self.localize(x)
        return heatmap, self.dnet(features, heatmap)
