"""Tiny models and data for the training-loop tests."""
from __future__ import annotations

import torch
from torch import nn


def tiny_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(3 * 6 * 6, 4))


def tiny_data(n: int = 40, seed: int = 1):
    """(images [n, 1, 6, 6] in [0, 1], labels [n]) whose labels depend on the images, so training learns."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    quadrants = torch.stack([x[:, 0, :3, :3], x[:, 0, :3, 3:], x[:, 0, 3:, :3], x[:, 0, 3:, 3:]], dim=1)
    y = quadrants.mean(dim=(2, 3)).argmax(dim=1)      # the brightest quadrant
    return x, y


def weights(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if tolerance:
            torch.testing.assert_close(a[key], b[key], **tolerance)
        else:
            assert torch.equal(a[key], b[key]), key
