"""ε warm-up: the objective's perturbation budget ramped linearly from 0 to its full value over the first part
of training (``fit(..., eps_warmup=fraction)``).

Why: adversarial training with a large budget from the first step can settle where the network predicts the
label prior for every input. There the loss is flat in the input and in the weights, and training never leaves
it. Wong and Kolter 2018 (their appendix B.2) report this on MNIST, and so do users of DeepRobust's and ART's PGD
trainers. Our own Madry PGD-40 run at ε = 0.3 on Wong et al.'s MNIST CNN stayed at chance for four full epochs,
at peak rates from 1e-4 to 5e-3, from random weights and from a clean-trained start
(docs/adversarial-training.md). A short ramp lets the network learn while the attack is still weak.

The scale at optimizer step ``s`` (counted from the run's start, 0-based) of ``total`` is
``min(1, (s + 1) / ceil(fraction * total))``: never 0, so even the first step trains on perturbed inputs, and
a function of the step alone, so a resumed run repeats the uninterrupted run's budgets exactly.
"""
from __future__ import annotations

import math


def check_eps_warmup(objective, eps_warmup) -> float:
    """``eps_warmup`` as a float in [0, 1), refused when the objective has no budget to scale."""
    ok = not isinstance(eps_warmup, bool) and isinstance(eps_warmup, (int, float)) and math.isfinite(eps_warmup)
    if not ok or not 0 <= eps_warmup < 1:
        raise ValueError(f"fit: eps_warmup must be a fraction of training in [0, 1), got {eps_warmup!r}")
    if eps_warmup > 0:
        if not hasattr(objective, "budget_scale"):
            raise ValueError(f"fit: eps_warmup needs an objective with a perturbation budget to scale "
                             f"(AdversarialTraining, FastAdversarialTraining or TRADES), got "
                             f"{type(objective).__name__}")
        try:
            objective.budget_scale = 1.0   # the objective refuses here if its attack cannot be scaled
        except (TypeError, ValueError) as error:
            raise ValueError(f"fit: eps_warmup: {error}") from None
    return float(eps_warmup)


def warmup_scale(step: int, total_steps: int, eps_warmup: float) -> float:
    """The budget's scale in (0, 1] at 0-based optimizer step ``step`` of ``total_steps``."""
    if eps_warmup <= 0:
        return 1.0
    ramp = max(1, math.ceil(eps_warmup * total_steps))
    return min(1.0, (step + 1) / ramp)
