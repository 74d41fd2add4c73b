"""Tiny models and inputs shared by the tests: fast, seeded, no training.

* :func:`tiny_cnn` / :func:`tiny_batch`: a random 1x10x10 CNN and inputs (attack and op unit tests);
* :func:`small_lenet` / :func:`mnist_images`: a narrow LeNet with seeded random weights and real MNIST test
  images (evaluation, transfer and CLI plumbing, where predictions must vary and attacks change some).
"""
from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(seed: int = 0, dtype: torch.dtype = torch.float32, num_classes: int = 10) -> nn.Module:
    """conv3x3(1->4) - ReLU - maxpool - linear on 1x10x10 images; random weights, eval mode."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 5 * 5, num_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.to(dtype).eval()


def tiny_batch(batch: int = 6, dtype: torch.dtype = torch.float32, seed: int = 1, num_classes: int = 10):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 10, 10, generator=g).to(dtype)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    return x, y


def labelled_by(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own predictions for ``x``: labels under which every image starts correctly classified."""
    with torch.no_grad():
        return model(x).argmax(1)


def other_class(y: torch.Tensor, num_classes: int = 10, shift: int = 3) -> torch.Tensor:
    return (y + shift) % num_classes


def small_lenet(seed: int = 0) -> nn.Module:
    """A width-2 LeNet with seeded random weights, eval mode (MNIST-shaped input)."""
    from robustkit.models import LeNet
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LeNet(width=2).eval()


def mnist_images(n: int):
    """The first ``n`` MNIST test images and labels."""
    from robustkit.datasets import mnist
    x, y = mnist("test")[:n]
    return x, y
