"""Learning-rate schedules of the adversarial-training literature, as per-step multipliers of the base rate.

Each schedule is a function of the training progress ``t = step / total_steps`` in [0, 1] returning the factor
the base learning rate is multiplied by; :func:`make_scheduler` wraps it in a ``LambdaLR`` stepped once per
optimizer step, whose state (the step count) goes into every checkpoint.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import torch

ScheduleFn = Callable[[float], float]
SCHEDULES = ("constant", "cosine", "piecewise", "cyclic")


def constant(t: float) -> float:
    return 1.0


def cosine(t: float) -> float:
    """Cosine decay from the base rate to 0 (Loshchilov and Hutter 2017, without restarts)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def piecewise(t: float) -> float:
    """The base rate, divided by 10 at half and again at three quarters of training (Madry et al.'s CIFAR
    recipe and Rice et al. 2020's)."""
    return 1.0 if t < 0.5 else 0.1 if t < 0.75 else 0.01


def cyclic(t: float, peak: float = 0.4) -> float:
    """One triangle: 0 up to the base rate at ``peak`` (2/5 of training, as in Wong et al. 2020's MNIST and
    CIFAR-10 runs), then linearly back to 0 at the end."""
    t = min(max(t, 0.0), 1.0)
    return t / peak if t < peak else (1.0 - t) / (1.0 - peak)


_BY_NAME = {"constant": constant, "cosine": cosine, "piecewise": piecewise, "cyclic": cyclic}


def resolve_schedule(schedule: Union[str, ScheduleFn]) -> ScheduleFn:
    """A schedule name of :data:`SCHEDULES`, or any callable ``t -> factor``."""
    if callable(schedule):
        return schedule
    if schedule not in _BY_NAME:
        raise ValueError(f"schedule must be one of {SCHEDULES} or a callable t -> factor, got {schedule!r}")
    return _BY_NAME[schedule]


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Union[str, ScheduleFn],
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying ``schedule`` at step ``k`` as ``factor(k / total_steps)``. The cyclic schedule
    starts at 0, so the first step already uses ``factor(1 / total_steps)`` (a first step at rate 0 would be
    wasted work); the others start at their base rate."""
    fn = resolve_schedule(schedule)
    total = max(1, int(total_steps))
    offset = 1 if fn is cyclic else 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: fn(min(step + offset, total) / total))


__all__ = ["SCHEDULES", "constant", "cosine", "piecewise", "cyclic", "resolve_schedule", "make_scheduler"]
