"""Input normalisation built into the reference models, kept out of their state dicts."""
from __future__ import annotations

from typing import Sequence

from robustkit.attacks.normalize import Normalize

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FixedNormalize(Normalize):
    """:class:`robustkit.Normalize` whose mean/std are constants of the architecture, not weights.

    The buffers are non-persistent, so a model's state dict holds only what training produced. That is what
    lets a torchvision ResNet-50 state dict load into :class:`robustkit.models.ResNet50` unchanged.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__(mean, std)
        for name in ("mean", "std"):
            self.register_buffer(name, self._buffers.pop(name), persistent=False)
