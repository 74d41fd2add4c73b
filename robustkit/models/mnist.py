"""Small MNIST classifiers (1x28x28 inputs in [0, 1], logits out) of four different architectures.

They serve the demo, the tests, and the transfer experiment of the self-distillation seed, which needs
several *different* source and target networks. Every class takes ``width`` (the size of its first layer,
later layers scale with it) and ``normalize``: with ``normalize=True`` (the default) the net subtracts the
MNIST mean 0.1307 and divides by the std 0.3081 itself, so callers and attacks always pass raw [0, 1]
pixels. The normalisation constants are not in the state dict, so ``LeNet().load_state_dict(sd)``
round-trips any LeNet state dict of the same width.
"""
from __future__ import annotations

from torch import Tensor, nn

from robustkit.nn import Normalize

#: MNIST train-set pixel mean and standard deviation (the constants of every MNIST model's input layer).
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


def _check_width(name: str, width: int, minimum: int = 1) -> int:
    if isinstance(width, bool) or not isinstance(width, int) or width < minimum:
        raise ValueError(f"{name}: width must be an int >= {minimum}, got {width!r}")
    return width


class _MnistNet(nn.Module):
    """Shared forward: optional normalisation, then ``features`` and ``classifier``."""

    features: nn.Module
    classifier: nn.Module

    def __init__(self, normalize: bool):
        super().__init__()
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD, persistent=False) if normalize else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [B, 1, 28, 28] in [0, 1] -> logits [B, num_classes]."""
        return self.classifier(self.features(self.normalize(x)))


class MLP(_MnistNet):
    """Two hidden ReLU layers of ``width`` units (784 -> width -> width -> 10)."""

    def __init__(self, width: int = 256, num_classes: int = 10, *, normalize: bool = True):
        super().__init__(normalize)
        width = _check_width("MLP", width)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width), nn.ReLU(inplace=True),
                                      nn.Linear(width, width), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(width, num_classes)


class LeNet(_MnistNet):
    """LeNet-5 (LeCun et al. 1998): conv5-pool-conv5-pool-fc-fc-fc with ReLU and max pooling.

    ``width`` is the first conv's channel count; at the default 6 the layers are 6, 16, 120, 84 as in
    the original, and they scale in those proportions. The first conv pads by 2 so 28x28 input plays the
    role of the original 32x32. Pooling comes before the ReLU: the same function (max and ReLU commute),
    at a quarter of the ReLU cost, which matters when training on 2 CPU cores.

    Example::

        >>> model = LeNet()                      # takes [B, 1, 28, 28] in [0, 1]
        >>> model(torch.rand(4, 1, 28, 28)).shape
        torch.Size([4, 10])
    """

    def __init__(self, width: int = 6, num_classes: int = 10, *, normalize: bool = True):
        super().__init__(normalize)
        width = _check_width("LeNet", width)
        conv2, fc1, fc2 = round(width * 16 / 6), width * 20, width * 14
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(inplace=True),    # 14x14
            nn.Conv2d(width, conv2, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True),           # 5x5
            nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(conv2 * 5 * 5, fc1), nn.ReLU(inplace=True),
                                        nn.Linear(fc1, fc2), nn.ReLU(inplace=True),
                                        nn.Linear(fc2, num_classes))


class ConvNet(_MnistNet):
    """The MNIST network of Carlini & Wagner (2017), Table 1: conv3(w) x2, pool, conv3(2w) x2, pool, fc 200 x2.

    ``width`` = 32 gives the paper's 32/64 channels.
    """

    def __init__(self, width: int = 32, num_classes: int = 10, *, normalize: bool = True):
        super().__init__(normalize)
        width = _check_width("ConvNet", width)
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3), nn.ReLU(inplace=True), nn.Conv2d(width, width, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                                                               # 12x12
            nn.Conv2d(width, 2 * width, 3), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),    # 4x4
            nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(2 * width * 4 * 4, 200), nn.ReLU(inplace=True),
                                        nn.Linear(200, 200), nn.ReLU(inplace=True), nn.Linear(200, num_classes))


class VGGSmall(_MnistNet):
    """VGG-style (Simonyan & Zisserman 2015): three stacks of two conv3-BN-ReLU, each followed by max pooling,
    with channels w, 2w, 4w, then a two-layer classifier. Uses batch norm, so call ``.eval()`` before attacking."""

    def __init__(self, width: int = 16, num_classes: int = 10, *, normalize: bool = True):
        super().__init__(normalize)
        width = _check_width("VGGSmall", width)
        layers: list[nn.Module] = []
        in_channels = 1
        for channels in (width, 2 * width, 4 * width):
            for _ in range(2):
                layers += [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                           nn.ReLU(inplace=True)]
                in_channels = channels
            layers.append(nn.MaxPool2d(2))                                                 # 14, 7, 3
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(4 * width * 3 * 3, 8 * width), nn.ReLU(inplace=True),
                                        nn.Linear(8 * width, num_classes))


#: Name -> class of the four MNIST architectures (for the transfer experiment and ``trained_mnist_model``).
MNIST_MODELS: dict[str, type[_MnistNet]] = {"mlp": MLP, "lenet": LeNet, "convnet": ConvNet, "vgg": VGGSmall}
