"""ResNets (He et al. 2016): ResNet-50 for ImageNet with torchvision's module names, ResNet-18 for CIFAR-10.

torchvision has no CPU build on our machines, so the ImageNet paths need a ResNet-50 of our own. Its module
names and parameter shapes equal torchvision's ``resnet50`` (25,557,032 parameters), so a torchvision state
dict loads with ``strict=True``. Unlike torchvision, the model takes images in [0, 1] and applies the ImageNet
mean/std itself (``normalize=True``); those constants are non-persistent buffers, so they are not in the
state dict.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from robustkit.nn import Normalize

#: Per-channel pixel mean and standard deviation of the training sets (constants of the input layer, kept out
#: of the state dict, so a torchvision ResNet-50 state dict loads unchanged).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _downsample(in_channels: int, out_channels: int, stride: int) -> Optional[nn.Sequential]:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's "ResNet v1.5"), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _make_layer(block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int, blocks: int,
                stride: int) -> tuple[nn.Sequential, int]:
    layers = []
    for index in range(blocks):
        layers.append(block(in_channels, planes, stride if index == 0 else 1))
        in_channels = planes * block.expansion
    return nn.Sequential(*layers), in_channels


def _init_weights(model: nn.Module) -> None:
    # torchvision's initialisation, so a freshly built model behaves like theirs.
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class ResNet50(nn.Module):
    """ResNet-50 for 3x224x224 ImageNet inputs in [0, 1]; torchvision-compatible state dict.

    Example::

        >>> model = robustkit.models.resnet50().eval()
        >>> model.load_state_dict(torchvision_state_dict)   # strict: the module names match
    """

    def __init__(self, num_classes: int = 1000, *, normalize: bool = True,
                 layers: Sequence[int] = (3, 4, 6, 3)):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, persistent=False) if normalize else nn.Identity()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        self.layer1, in_channels = _make_layer(Bottleneck, in_channels, 64, layers[0], 1)
        self.layer2, in_channels = _make_layer(Bottleneck, in_channels, 128, layers[1], 2)
        self.layer3, in_channels = _make_layer(Bottleneck, in_channels, 256, layers[2], 2)
        self.layer4, in_channels = _make_layer(Bottleneck, in_channels, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [B, 3, H, W] in [0, 1] (224x224 for ImageNet) -> logits [B, num_classes]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int = 1000, *, normalize: bool = True) -> ResNet50:
    """A randomly initialised :class:`ResNet50` (no pretrained weights can be downloaded here)."""
    return ResNet50(num_classes, normalize=normalize)


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 3x32x32 CIFAR-10 inputs in [0, 1]: a 3x3 stem without max pooling, then four stages of
    two basic blocks with ``width``, 2, 4 and 8 times ``width`` channels (He et al. 2016, as commonly adapted
    to CIFAR). ``normalize=True`` applies the CIFAR-10 mean/std inside."""

    def __init__(self, num_classes: int = 10, *, width: int = 64, normalize: bool = True):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"ResNet18Cifar: width must be an int >= 1, got {width!r}")
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD, persistent=False) if normalize else nn.Identity()
        self.conv1 = _conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        in_channels = width
        self.layer1, in_channels = _make_layer(BasicBlock, in_channels, width, 2, 1)
        self.layer2, in_channels = _make_layer(BasicBlock, in_channels, 2 * width, 2, 2)
        self.layer3, in_channels = _make_layer(BasicBlock, in_channels, 4 * width, 2, 2)
        self.layer4, in_channels = _make_layer(BasicBlock, in_channels, 8 * width, 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [B, 3, 32, 32] in [0, 1] -> logits [B, num_classes]."""
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
