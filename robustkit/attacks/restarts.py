"""Random restarts: run an attack ``restarts`` times from independent random starts and keep, per sample,
the best result. Evaluation attacks (APGD, PGD) restart only the samples no earlier run broke, so a restart
costs in proportion to the robust samples left.

"Best" per sample: a successful result beats an unsuccessful one; among successful results of a
minimal-norm attack (DeepFool, C&W) the smaller perturbation wins; otherwise the earlier result stays.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from robustkit.attacks.base import AttackOutput


def check_restarts(name: str, restarts) -> int:
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"{name}: restarts must be an int >= 1 (the number of random starts), got {restarts!r}")
    return restarts


RunOnce = Callable[[Tensor, Tensor, Optional[Tensor], int], AttackOutput]
Judge = Callable[[Tensor, Tensor, Tensor, Optional[Tensor]], Tensor]


def best_of_restarts(run_once: RunOnce, judge: Judge, x: Tensor, y: Tensor, target: Optional[Tensor],
                     restarts: int, *, norm: Optional[str] = None) -> AttackOutput:
    """Runs ``run_once(x_sub, y_sub, target_sub, restart_index)`` up to ``restarts`` times.

    ``judge(adv, x, y, target) -> [B] bool`` says which results succeed. With ``norm`` (a minimal-norm
    attack) every restart runs on every sample and a successful result with a smaller ``norm`` perturbation
    replaces the kept one; without it (a fixed-budget attack) each restart runs only on the samples not yet
    successful. ``steps`` add up over the restarts; extras are taken from the kept result.
    """
    out = run_once(x, y, target, 0)
    if restarts == 1:
        return out
    adv, steps = out.adv.clone(), out.steps.clone()
    extras = {k: v.clone() for k, v in out.extras.items()}
    success = judge(adv, x, y, target)
    for index in range(1, restarts):
        rows = torch.arange(x.shape[0], device=x.device) if norm is not None else (~success).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        t_sub = None if target is None else target[rows]
        part = run_once(x[rows], y[rows], t_sub, index)
        steps[rows] += part.steps
        ok = judge(part.adv, x[rows], y[rows], t_sub)
        if norm is None:
            better = ok
        else:
            delta_new = (part.adv - x[rows]).flatten(1)
            delta_old = (adv[rows] - x[rows]).flatten(1)
            size = (lambda d: d.abs().amax(dim=1)) if norm == "linf" else (lambda d: d.norm(dim=1))
            better = ok & (~success[rows] | (size(delta_new) < size(delta_old)))
        chosen = rows[better]
        adv[chosen] = part.adv[better]
        for key, value in part.extras.items():
            if key in extras:
                extras[key][chosen] = value[better]
        success[chosen] = True
    return AttackOutput(adv=adv, steps=steps, extras=extras)
