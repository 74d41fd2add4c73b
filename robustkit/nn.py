"""Small modules every layer of robustkit builds on: input normalisation and a logit-averaging ensemble.

This module imports nothing from robustkit, so models, attacks and evaluation can all use it.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as an ``nn.Module``: put it in front of a model that expects
    normalised input, so that attacks work on images in [0, 1].

    Args:
        mean, std: one value per channel (``std > 0``).
        persistent: whether ``mean`` and ``std`` are saved in the state dict. The reference models use
            ``persistent=False``: the constants belong to the architecture, so a state dict holds only what
            training produced (a torchvision ResNet-50 state dict then loads unchanged).

    Example::

        >>> model = nn.Sequential(Normalize((0.1307,), (0.3081,)), lenet)
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], persistent: bool = True):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32)
        if mean_t.dim() != 1 or mean_t.shape != std_t.shape:
            raise ValueError(f"Normalize: mean and std must be sequences of one length, got {list(mean_t.shape)} "
                             f"and {list(std_t.shape)}")
        if not bool(torch.isfinite(mean_t).all()):
            raise ValueError(f"Normalize: mean must be finite, got {mean_t.tolist()}")
        if not bool((std_t > 0).all()) or not bool(torch.isfinite(std_t).all()):
            raise ValueError(f"Normalize: std must be finite and > 0, got {std_t.tolist()}")
        if not isinstance(persistent, bool):
            raise TypeError(f"Normalize: persistent must be a bool, got {type(persistent).__name__}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=persistent)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=persistent)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Ensemble(nn.Module):
    """K classifiers as one: the forward is the weighted mean of the members' logits,
    ``Σ_k w_k z_k(x) / Σ_k w_k`` (the plain mean when ``weights`` is None).

    Attacks accept an ``Ensemble`` and ``models=[...]`` alike; they call :meth:`combine` on the member
    logits they computed themselves (to run members on separate CUDA streams, or to fuse a per-member
    loss), so there is one averaging rule.

    Args:
        models: the K >= 1 member ``nn.Module``\\ s, each mapping the same input to ``[B, num_classes]`` logits.
        weights: K finite weights >= 0 with a positive sum, or None for equal weights.

    Example::

        >>> ensemble = Ensemble([lenet, mlp], weights=[2.0, 1.0])
        >>> logits = ensemble(x)          # (2 * lenet(x) + mlp(x)) / 3
    """

    def __init__(self, models: Sequence[nn.Module], weights: Optional[Sequence[float]] = None):
        super().__init__()
        if isinstance(models, nn.Module) or not isinstance(models, (list, tuple, nn.ModuleList)):
            raise TypeError(f"Ensemble: models must be a list of nn.Modules, got {type(models).__name__}")
        if len(models) == 0:
            raise ValueError("Ensemble: models must not be empty")
        for i, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise TypeError(f"Ensemble: models[{i}] must be an nn.Module, got {type(m).__name__}")
        # a ModuleList named ``members``: state-dict keys are ``members.<k>.<param>``
        self.members = nn.ModuleList(models)
        self.weights: Optional[List[float]] = None
        if weights is not None:
            if isinstance(weights, Tensor):
                weights = weights.tolist()
            if len(weights) != len(models):
                raise ValueError(f"Ensemble: weights must have one entry per model ({len(models)}), got {len(weights)}")
            for i, w in enumerate(weights):
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    raise ValueError(f"Ensemble: weights[{i}] must be a finite number >= 0, got {w!r}")
            if sum(weights) <= 0:
                raise ValueError(f"Ensemble: weights must have a positive sum, got {list(weights)}")
            self.weights = [float(w) for w in weights]

    def __len__(self) -> int:
        return len(self.members)

    def combine(self, logits: Sequence[Tensor]) -> Tensor:
        """The ensemble's logits from the K members' ``[B, C]`` logits (differentiable)."""
        if len(logits) != len(self.members):
            raise ValueError(f"Ensemble.combine: expected {len(self.members)} logit tensors, got {len(logits)}")
        if len(logits) == 1:
            return logits[0]
        stacked = torch.stack(list(logits))
        if self.weights is None:
            return stacked.mean(dim=0)
        w = torch.tensor(self.weights, dtype=stacked.dtype, device=stacked.device)
        return torch.tensordot(w / w.sum(), stacked, dims=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.combine([m(x) for m in self.members])

    def extra_repr(self) -> str:
        return "" if self.weights is None else f"weights={self.weights}"


def module_device(module: nn.Module, default: Optional[torch.device] = torch.device("cpu")) -> Optional[torch.device]:
    """The device of ``module``'s first parameter (or, without parameters, first buffer); ``default`` for a
    module that holds no tensors."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return default


__all__ = ["Normalize", "Ensemble", "module_device"]
