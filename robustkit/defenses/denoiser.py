"""The DUNET denoiser and the guided-denoiser wrapper (Liao et al. 2018, "Defense against adversarial attacks
using high-level representation guided denoiser"; the Defendr seed's Sec. 4.2.1 and Fig. 1-2).

DUNET is a denoising autoencoder with U-Net lateral connections. It predicts the *noise* ``dx`` of its input,
and the denoised image is ``x - dx``; predicting the residual is what makes the lateral connections useful (the
identity part of the image never has to pass through the bottleneck).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_block(c_in: int, c_out: int, convs: int, stride: int = 1) -> nn.Sequential:
    """``convs`` x (3x3 conv, BatchNorm, ReLU); the first conv carries the stride (Liao et al.'s C_k block)."""
    layers: List[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride=stride if i == 0 else 1, padding=1,
                             bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DUNet(nn.Module):
    """Denoising U-Net that predicts the noise of its input (same shape out as in).

    The encoder has ``len(widths)`` blocks: the first keeps the resolution (two convs), each later one halves
    it with a strided conv (three convs). The decoder upsamples to each lateral's exact size (so odd sizes
    work), concatenates the lateral, and fuses with a conv block; a final 1x1 conv maps to ``channels``.
    ``widths=(64, 128, 256, 256, 256)`` is Liao et al.'s ImageNet DUNET; small images train well with
    narrower ones, e.g. ``(16, 32, 64, 64)`` for MNIST.
    """

    def __init__(self, channels: int = 3, widths: Sequence[int] = (64, 128, 256, 256, 256)):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if channels < 1:
            raise ValueError(f"DUNet: channels must be >= 1, got {channels}")
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"DUNet: widths must name at least two positive widths, got {widths}")
        self.channels, self.widths = channels, widths
        self.encoder = nn.ModuleList(
            [_conv_block(channels, widths[0], 2)]
            + [_conv_block(widths[i - 1], widths[i], 3, stride=2) for i in range(1, len(widths))])
        # decoder stage i fuses the upsampled stage i+1 (width widths[i+1] for the deepest, else widths[i+1]
        # after its own fusion) with the lateral of encoder stage i
        self.decoder = nn.ModuleList(
            [_conv_block(widths[i + 1] + widths[i], widths[i], 3 if i > 0 else 2)
             for i in range(len(widths) - 1)])
        self.head = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"DUNet: x must be [B, {self.channels}, H, W], got shape {list(x.shape)}")
        laterals = []
        h = x
        for block in self.encoder:
            h = block(h)
            laterals.append(h)
        h = laterals.pop()
        for i in range(len(self.decoder) - 1, -1, -1):
            lateral = laterals.pop()
            h = F.interpolate(h, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            h = self.decoder[i](torch.cat([h, lateral], dim=1))
        return self.head(h)


class GuidedDenoiser(nn.Module):
    """``model(x - denoiser(x))``: the denoiser in front of the classifier (HGD's inference pipeline).

    The whole pipeline is differentiable, so white-box attacks go through the denoiser end to end; that is the
    attack to report beside any black-box or transfer number.
    """

    def __init__(self, denoiser: nn.Module, model: nn.Module):
        super().__init__()
        self.denoiser = denoiser
        self.model = model

    def denoise(self, x: Tensor) -> Tensor:
        noise = self.denoiser(x)
        if noise.shape != x.shape:
            raise ValueError(f"GuidedDenoiser: the denoiser's output shape {list(noise.shape)} differs from its "
                             f"input's {list(x.shape)}")
        return x - noise

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.denoise(x))
