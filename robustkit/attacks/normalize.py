"""Normalize: put it in front of a model that expects normalised input, so attacks stay in [0, 1]."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as an ``nn.Module``.

    Example::

        >>> model = nn.Sequential(Normalize((0.1307,), (0.3081,)), lenet)
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32)
        if mean_t.dim() != 1 or mean_t.shape != std_t.shape:
            raise ValueError(f"Normalize: mean and std must be sequences of one length, got {list(mean_t.shape)} "
                             f"and {list(std_t.shape)}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"Normalize: std must be > 0, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
