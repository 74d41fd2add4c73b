"""Parseval training (Cisse, Bojanowski, Grave, Dauphin and Usunier 2017, "Parseval networks").

After every optimizer step each weight matrix ``W`` (a Linear weight ``[out, in]``, a convolution weight
reshaped to ``[out, in · k_h · k_w]``) is retracted toward a Parseval tight frame, ``W Wᵀ = I``, by one step
of the paper's Eq. (4) on a random subset S of its rows:

    W_S ← (1 + β) W_S − β W_S W_Sᵀ W_S

In terms of the singular values of ``W_S`` the step is ``σ ← (1 + β) σ − β σ³``: its fixed points are σ = 1
(stable for 0 < β < 1) and σ = 0, so repeated steps push every non-zero singular value toward 1 while the
singular vectors stay put. Sampling rows (Cisse et al. use 30 %) keeps the cost a fraction of the full
``W Wᵀ W`` and, per the paper, is enough because the constraint is re-applied every step.

Not implemented: the paper's convexity constraint on the weights of aggregation (residual) layers; the
networks of the Deep Defense comparison (MLP, LeNet) have none.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

_LAYERS: Tuple[Type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _bare(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def parseval_layers(model: nn.Module, layer_types: Sequence[Type[nn.Module]] = _LAYERS):
    """``(name, module)`` of every layer whose weight Parseval training constrains."""
    return [(name, m) for name, m in _bare(model).named_modules()
            if isinstance(m, tuple(layer_types)) and getattr(m, "weight", None) is not None]


def weight_matrix(module: nn.Module) -> Tensor:
    """The weight as the ``[out, rest]`` matrix the constraint applies to (a view sharing its storage)."""
    w = module.weight
    return w.view(w.shape[0], -1) if w.is_contiguous() else w.reshape(w.shape[0], -1)


def parseval_retraction(w: Tensor, beta: float) -> Tensor:
    """One step ``(1 + β) W − β W Wᵀ W`` of a ``[rows, cols]`` matrix (not in place)."""
    return torch.addmm(w, w @ w.t(), w, beta=1 + beta, alpha=-beta)


class Parseval:
    """The Parseval constraint, a :func:`robustkit.training.fit` constraint: ``constraint(model)`` after each
    optimizer step (or call it yourself after ``optimizer.step()``).

    Args:
        beta: the retraction step β > 0 (Deep Defense's grid search: 1e-4 on MNIST, 3e-4 on CIFAR-10; Cisse
            et al. 3e-4). β ≥ 1 overshoots (σ = 1 is no longer an attracting fixed point for σ ≈ 1 at β ≥ 1).
        fraction: the share of each matrix's rows retracted per call, in (0, 1]; at least one row. Cisse et al.
            and Deep Defense use 0.3.
        layer_types: the module types whose ``weight`` is constrained (Linear and Conv1d/2d/3d by default).
        generator: the row sampling's generator (default: torch's global one).

    Example::

        >>> constraint = Parseval(beta=1e-4, fraction=0.3)
        >>> fit(model, train_data, epochs=5, constraints=[constraint])
        >>> parseval_tightness(model)          # {"features.0": 1.9, ...}: ||W Wᵀ − I||_F per layer
    """

    def __init__(self, beta: float = 3e-4, fraction: float = 0.3, *,
                 layer_types: Sequence[Type[nn.Module]] = _LAYERS, generator: Optional[torch.Generator] = None):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"Parseval: beta must be a finite number > 0, got {beta!r}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"Parseval: fraction must be a number in (0, 1], got {fraction!r}")
        self.beta, self.fraction = float(beta), float(fraction)
        self.layer_types = tuple(layer_types)
        self.generator = generator

    def rows(self, num_rows: int, device: torch.device) -> Optional[Tensor]:
        """The rows to retract this call (None: all of them)."""
        if self.fraction == 1:
            return None
        count = max(1, int(round(self.fraction * num_rows)))
        return torch.randperm(num_rows, generator=self.generator)[:count].to(device)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> None:
        for _, module in parseval_layers(model, self.layer_types):
            w = weight_matrix(module)
            rows = self.rows(w.shape[0], w.device)
            if rows is None:
                new = parseval_retraction(w, self.beta)
                module.weight.copy_(new.view_as(module.weight))
                continue
            new_rows = parseval_retraction(w.index_select(0, rows), self.beta)
            if w.data_ptr() == module.weight.data_ptr():
                w.index_copy_(0, rows, new_rows)
            else:  # a non-contiguous weight: write the whole matrix back
                w = w.index_copy(0, rows, new_rows)
                module.weight.copy_(w.view_as(module.weight))

    def __repr__(self) -> str:
        return f"Parseval(beta={self.beta:g}, fraction={self.fraction:g})"


@torch.no_grad()
def parseval_tightness(model: nn.Module, layer_types: Sequence[Type[nn.Module]] = _LAYERS) -> Dict[str, float]:
    """``||W Wᵀ − I||_F`` for every constrained layer, by module name (0 for a Parseval tight frame).

    A matrix with more rows than columns cannot reach 0: its ``W Wᵀ`` has rank at most ``cols``, so the value
    is at least ``sqrt(rows − cols)`` (the retraction then makes ``Wᵀ W`` approach I instead)."""
    out = {}
    for name, module in parseval_layers(model, layer_types):
        w = weight_matrix(module).double()
        gram = w @ w.t()
        gram.diagonal().sub_(1)
        out[name] = float(torch.linalg.matrix_norm(gram))
    return out


__all__ = ["Parseval", "parseval_layers", "parseval_retraction", "parseval_tightness", "weight_matrix"]
