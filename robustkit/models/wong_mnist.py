"""The small MNIST CNN of Wong, Rice and Kolter 2020 ("Fast is better than free", their ``mnist_net``).

The network their MNIST recipes (fast FGSM training at eps 0.3, and PGD-40 training after Madry et al.) are
reported on: two stride-2 4x4 convolutions with 16 and 32 channels, a 100-unit layer, 10 logits. It takes raw
[0, 1] pixels with no normalisation layer, as theirs does. A plain ``nn.Sequential`` so that its state dict keys
("0.weight", ...) match the weights cached by the benchmarks.
"""
from __future__ import annotations

from torch import nn


def wong_mnist_cnn(num_classes: int = 10) -> nn.Sequential:
    """[B, 1, 28, 28] in [0, 1] -> logits [B, num_classes]; initialised from torch's global RNG."""
    return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, num_classes))
