"""The MNIST architectures of the Deep Defense seed (its Table 4), for reproducing its tables.

Both take [1, 28, 28] images in [0, 1] and return logits, with no input normalisation: Caffe's MNIST nets,
which the seed fine-tunes, only scale the bytes to [0, 1]. Their layers carry the seed's names (``conv1``,
``conv2``, ``fc1``, ``fc2``, ``fc3``), which the layer-wise experiment of its Fig. 4 refers to.
"""
from __future__ import annotations

from torch import Tensor, nn


class DeepDefenseMLP(nn.Module):
    """784-500-150-10 with ReLU (Table 4, "MLP")."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(28 * 28, 500)
        self.fc2 = nn.Linear(500, 150)
        self.fc3 = nn.Linear(150, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(self.flatten(x))))))


class CaffeLeNet(nn.Module):
    """Caffe's MNIST LeNet (Table 4, "LeNet"): Conv-5-20, MaxPool-2, Conv-5-50, MaxPool-2, FC-500, ReLU, FC-10.
    As in Caffe's model, there is no non-linearity after the convolutions."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)          # 24x24
        self.conv2 = nn.Conv2d(20, 50, 5)         # 8x8 after the first pool -> 4x4 after the second
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.conv2(self.pool(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(self.flatten(h))))
