"""The image-classifier baseline: CAM equals the classifier's logit map, it learns image labels, it is tested like
the weak method."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lightning_modules.baseline import CamClassifier, ImageClassifierModule


def test_cam_average_is_the_image_logit() -> None:
    """CAM, Eq. 1-2 of Zhou et al.: the head on the averaged features equals the average of the head per cell."""
    torch.manual_seed(0)
    net = CamClassifier("resnet18").eval()
    x = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        heatmap, logit = net(x)
        features = net.backbone(x)
        expected = net.head(features.mean(dim=(2, 3), keepdim=True)).flatten()
    assert heatmap.shape == (2, 1, 3, 2)
    assert torch.all((heatmap >= 0) & (heatmap <= 1))
    torch.testing.assert_close(logit, expected, rtol=1e-5, atol=1e-5)


def test_learns_image_labels_and_lr_schedule() -> None:
    """A few steps on bright-vs-dark images separate them; the rate warms up, then decays to 0 by max_steps."""
    torch.manual_seed(0)
    module = ImageClassifierModule(CamClassifier("resnet18"),
                                   functools.partial(torch.optim.AdamW, lr=1e-3), max_steps=20, warmup_steps=3)
    assert module.max_steps == 20
    assert module.lr_factor(0) == 1 / 3 and module.lr_factor(2) == 1.0
    assert abs(module.lr_factor(20)) < 1e-12
    optimizer = module.configure_optimizers()["optimizer"]
    dark, bright = torch.full((4, 1, 32, 32), 0.2), torch.full((4, 1, 32, 32), 0.8)
    images = torch.cat([dark, bright]) + 0.05 * torch.rand(8, 1, 32, 32)
    labels = torch.tensor([0.0] * 4 + [1.0] * 4)
    module.train()
    for _ in range(20):
        loss = F.binary_cross_entropy_with_logits(module.net(images)[1], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        _, logits = module.net(images)
    assert logits[4:].min() > logits[:4].max()
