"""What the Carlini-Wagner attacks (Carlini & Wagner 2017) share: their settings, the margin loss f and the
tanh-box change of variables. Imported by ``cw_l2``, ``cw_linf``, ``cw_l0`` and ``cw``; imports none of them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Tuple

import torch
from torch import Tensor

#: the ensemble's logits with the graph kept, ``[B, ...] -> [B, C]``, or ``[eot, B, C]`` draws of a randomized
#: model (what the attack functions call; they only hand them to :func:`margin_loss`)
LogitsFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class CWSettings:
    """The hyperparameters of :class:`robustkit.attacks.CW` (see its docstring)."""

    binary_search_steps: int = 9
    steps: int = 10000
    lr: float = 0.01
    initial_const: float = 1e-3
    confidence: float = 0.0
    abort_early: bool = True
    abort_checks: int = 10
    abort_tol: float = 1e-4
    warm_start: bool = False

    def check(self, owner: str) -> None:
        for name in ("binary_search_steps", "steps", "abort_checks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}")
        for name in ("lr", "initial_const"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, (int, float)) \
                or not (self.confidence >= 0 and math.isfinite(self.confidence)):
            raise ValueError(f"{owner}: confidence must be a finite number >= 0, got {self.confidence!r}")
        if isinstance(self.abort_tol, bool) or not isinstance(self.abort_tol, (int, float)) \
                or not 0 <= self.abort_tol < 1:
            raise ValueError(f"{owner}: abort_tol must be a number in [0, 1), got {self.abort_tol!r}")
        for name in ("abort_early", "warm_start"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{owner}: {name} must be a bool, got {type(getattr(self, name)).__name__}")


def margin_loss(logits: Tensor, label: Tensor, targeted: bool, confidence: float) -> Tuple[Tensor, Tensor]:
    """C&W's f (Eq. 6 of the paper, their chosen f_6) and whether it counts as adversarial, per sample.

    ``label`` is the target (targeted) or the true class (untargeted). Returns ``(f [B], success [B])``
    with ``success`` = the margin exceeds ``confidence`` (the paper's high-confidence criterion; at 0 it
    is "the predicted class is the target" or "is not the label").

    ``logits`` may be ``[eot, B, C]``, the draws of a randomized model: ``f`` is then the mean of the draws'
    f (the expected loss, whose gradient is the mean of theirs) and ``success`` that of the mean logits.
    """
    if logits.dim() == 3:
        draws, batch, classes = logits.shape
        f, _ = margin_loss(logits.reshape(draws * batch, classes), label.repeat(draws), targeted, confidence)
        _, success = margin_loss(logits.detach().mean(dim=0), label, targeted, confidence)
        return f.view(draws, batch).mean(dim=0), success
    real = logits.gather(1, label.unsqueeze(1)).squeeze(1)
    other = logits.scatter(1, label.unsqueeze(1), float("-inf")).amax(dim=1)
    margin = other - real if targeted else real - other
    return margin.clamp_min(-confidence), -margin.detach() > confidence


def to_w(x: Tensor) -> Tensor:
    """C&W's tanh-box change of variables, ``x = (tanh(w) + 1) / 2`` solved for ``w``; Carlini's 0.999999
    keeps atanh finite at 0 and 1."""
    return torch.atanh((2 * x - 1) * (1 - 1e-6))


def from_w(w: Tensor) -> Tensor:
    """The image of the tanh-space variable ``w``: ``(tanh(w) + 1) / 2``, in [0, 1] by construction."""
    return (torch.tanh(w) + 1) / 2


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1, 1, ...]``, broadcastable against ``like``."""
    return v.view((-1,) + (1,) * (like.dim() - 1))


__all__ = ["CWSettings", "LogitsFn", "margin_loss", "to_w", "from_w", "per_sample"]
