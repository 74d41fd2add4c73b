"""The ResNet image-to-image generator of GAP (Poursaeed et al. 2018, Sec. 3, following Johnson et al.'s
style-transfer network as in CycleGAN): a 7x7 stem, two stride-2 downsampling convolutions, residual
blocks, two stride-2 transposed convolutions and a 7x7 head with tanh, batch-norm throughout. Output in
[-1, 1], the same spatial size as the input (H and W must be multiples of 4).
"""
from __future__ import annotations

from torch import Tensor, nn


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """``[B, in_channels, H, W] -> [B, out_channels, H, W]`` in [-1, 1].

    Args:
        width: channels of the first layer (64 in the paper's ImageNet generator; 16-32 suit 32 x 32 images).
        blocks: residual blocks at 1/4 resolution (6 in the paper for small images, 9 for ImageNet).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, blocks: int = 6):
        super().__init__()
        if width < 1 or blocks < 0:
            raise ValueError(f"width must be >= 1 and blocks >= 0, got {width}, {blocks}")
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7, bias=False), nn.BatchNorm2d(width),
                  nn.ReLU(inplace=True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(width * mult, width * mult * 2, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width * mult * 2), nn.ReLU(inplace=True)]
        layers += [_ResidualBlock(width * 4) for _ in range(blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=False),
                       nn.BatchNorm2d(width * mult // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"ResnetGenerator needs H and W divisible by 4, got {list(x.shape[-2:])}")
        return self.net(x)
