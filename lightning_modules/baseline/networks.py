"""The baseline's network: a timm backbone from scratch with a linear head, and its class activation map.

CAM (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016, Eq. 1-2): the image
logit is the linear head on the globally averaged feature map, which equals the spatial average of the head
applied at every cell. That per-cell map is the heat map (here through a sigmoid, in [0, 1], like LNet's), so
the baseline's pixel AUROC/AP compare with the weak method's. CAM, not Grad-CAM: with one linear head after
global average pooling the two give the same map up to a positive factor, and CAM needs no backward pass.
"""

from __future__ import annotations

import timm
import torch
from torch import nn


class CamClassifier(nn.Module):
    """``image`` (N, C, H, W) -> (``heatmap`` (N, 1, H/s, W/s) in [0, 1], ``logit`` (N,)), ``s`` the backbone's
    stride (32 for ResNet-18): the same outputs as :class:`lightning_modules.weak.WeakDefectNet`.

    Args:
        backbone: a timm model name, built from scratch (never downloaded).
        in_channels: image channels (1: grayscale, as the datasets are read).
    """

    def __init__(self, backbone: str = "resnet18", in_channels: int = 1) -> None:
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, in_chans=in_channels, num_classes=0,
                                          global_pool="")
        self.head = nn.Conv2d(self.backbone.num_features, 1, kernel_size=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.head(self.backbone(image))  # (N, 1, h, w): the head at every cell (CAM, Eq. 2)
        logit = cam.float().mean(dim=(1, 2, 3))  # = the head on the averaged features (Eq. 1)
        return torch.sigmoid(cam.float()), logit
