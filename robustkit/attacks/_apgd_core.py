"""The Auto-PGD iteration (Croce and Hein 2020, Algorithm 1) on plain tensors.

Kept apart from the :class:`robustkit.attacks.APGD` wrapper so that the schedule can be compared step by step
with the naive per-sample implementation in ``tests/reference/adaptive.py``.

Reading of Algorithm 1 used here (the paper leaves two details implicit):

* ``η(w_{j-1})`` in Condition 2 is the step size *used* up to checkpoint ``w_{j-1}`` (before that
  checkpoint's possible halving), so Condition 2 cannot fire right after a halving; this is also what the
  authors' code does.
* The indicator ``f(x(i+1)) > f(x(i))`` for ``i = w_j`` compares against ``x(w_j + 1)`` after a possible
  restart from ``x_max`` (line 14 replaces ``x(k+1)`` before the next iteration reads it).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import List, Optional

import torch
from torch import Tensor

from robustkit.attacks.dlr import attack_loss_and_grad
from robustkit.attacks.eot import LogitsFn, eot_loss_and_grad
from robustkit.ops import sign_momentum_step


def checkpoints(steps: int) -> List[int]:
    """The checkpoints ``w_j = ceil(p_j * steps)`` of Sec. 3.2, ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, that fall inside the loop (``1 <= w_j <= steps - 1``),
    distinct and increasing. ``p`` is kept in hundredths so that ``ceil`` sees exact values (0.41 * 100 is
    41.00000000000001 in binary floating point)."""
    hundredths = [0, 22]
    while hundredths[-1] <= 100:
        hundredths.append(hundredths[-1] + max(hundredths[-1] - hundredths[-2] - 3, 6))
    points = sorted({-(-p * steps // 100) for p in hundredths[1:]})
    return [w for w in points if 1 <= w <= steps - 1]


def random_start(x: Tensor, eps: float, norm: str, generator: Optional[torch.Generator]) -> Tensor:
    """A random point at distance ``eps`` (L-inf: a uniform direction scaled to L-inf norm ``eps``; L2: a
    Gaussian direction scaled to L2 norm ``eps``), clipped to [0, 1] (the start the authors' code uses)."""
    view = (-1,) + (1,) * (x.dim() - 1)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).mul_(2).sub_(1)
        scale = eps / noise.flatten(1).abs().amax(dim=1).clamp_min(1e-12)
    else:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        scale = eps / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
    return (x + noise * scale.view(view)).clamp_(0.0, 1.0)


@dataclass
class APGDRun:
    """What one APGD run returns for B samples."""

    adv: Tensor          # [B, ...] first successful iterate, else the highest-loss point x_max
    success: Tensor      # [B] bool, judged on the logits of the iterate (mean logits under EOT)
    steps: Tensor        # [B] int64, the index k of the returned success iterate x(k), else `steps`
    best_loss: Tensor    # [B] f_max
    step_trace: Optional[Tensor] = None  # [steps, B] η used at iteration k (NaN once a sample left), if traced


class _Projector:
    """Projection onto the eps-ball around x intersected with the [0, 1] box."""

    def __init__(self, x: Tensor, eps: float, norm: str):
        self.x, self.eps, self.norm = x, eps, norm
        if norm == "linf":
            self.lo = (x - eps).clamp_(min=0.0)
            self.hi = (x + eps).clamp_(max=1.0)

    def __call__(self, point: Tensor) -> Tensor:
        if self.norm == "linf":
            return torch.clamp(point, self.lo, self.hi)
        delta = point - self.x
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (self.eps / norms).clamp_(max=1.0).view((-1,) + (1,) * (point.dim() - 1))
        return delta.mul_(factor).add_(self.x).clamp_(0.0, 1.0)

    def take(self, rows: Tensor) -> "_Projector":
        return _Projector(self.x[rows], self.eps, self.norm)


def apgd(logits_fn: LogitsFn, x: Tensor, y: Tensor, start: Tensor, *, eps: float, norm: str = "linf",
         steps: int = 100, loss: str = "ce", target: Optional[Tensor] = None, targeted_success: bool = False,
         eot: int = 1, eot_batched: bool = True, rho: float = 0.75, alpha: float = 0.75, early_stop: bool = True,
         return_best: bool = False, trace: bool = False, groups: Optional[Tensor] = None) -> APGDRun:
    """Algorithm 1 from ``start`` (``x(0)``), per sample, with ``η(0) = 2 eps``.

    ``target`` selects the targeted loss; success is ``argmax == target`` when ``targeted_success`` and
    ``argmax != y`` otherwise (APGD-T counts any misclassification, as AutoAttack does). With
    ``early_stop`` samples leave the active batch once successful: the results are the same as without
    (samples never interact), only cheaper. ``return_best`` returns ``x_max`` for every sample (for a
    randomized model the point of highest expected loss is a stronger answer than the first iterate one
    draw misclassified); it implies no early stop.

    ``groups`` (``[B]`` int64, with early stop): rows that attack the same sample toward different targets
    share a group id, and every row of a group leaves the active batch once one of them succeeds (APGD-T's
    targets as one batch); the rows that leave without succeeding keep ``success=False``, and ``steps`` the
    iteration they left at.
    """
    early_stop = early_stop and not return_best
    batch = x.shape[0]
    loss_grad = partial(attack_loss_and_grad, loss)
    view = (-1,) + (1,) * (x.dim() - 1)
    out_adv = start.clone()
    out_success = torch.zeros(batch, dtype=torch.bool, device=x.device)
    out_steps = torch.full((batch,), steps, dtype=torch.int64, device=x.device)
    out_best = torch.empty(batch, dtype=x.dtype, device=x.device)
    step_trace = torch.full((steps, batch), float("nan"), dtype=x.dtype, device=x.device) if trace else None
    wset = set(checkpoints(steps))

    active = torch.arange(batch, device=x.device)
    x_a, y_a, t_a = x, y, target
    project = _Projector(x_a, eps, norm)

    def ev(point: Tensor, need_grad: bool):
        return eot_loss_and_grad(logits_fn, point, loss_grad, y_a, t_a, eot=eot, batched=eot_batched,
                                 need_grad=need_grad)

    def record(k: int, point: Tensor, logits: Tensor, found: Tensor) -> Tensor:
        """Marks the rows of the active batch that succeed at x(k) for the first time; returns the new mask."""
        pred = logits.argmax(dim=1)
        hit = (pred == t_a) if targeted_success else (pred != y_a)
        new = hit & ~found
        if bool(new.any()):
            rows = active[new]
            out_adv[rows] = point[new].detach()
            out_success[rows] = True
            out_steps[rows] = k
        return found | hit

    def sign_step(point: Tensor, grad: Tensor, eta: Tensor) -> Tensor:
        moved = point.clone()
        sign_momentum_step(moved, x_a, grad, None, step_size=eta, eps=eps, decay=0.0, grad_norm="none", norm=norm)
        return moved

    eta = torch.full((batch,), 2.0 * eps, dtype=x.dtype, device=x.device)
    x_prev = start.clone()
    f_prev, g_prev, logits = ev(x_prev, need_grad=True)
    found = record(0, x_prev, logits, torch.zeros(batch, dtype=torch.bool, device=x.device))
    if step_trace is not None:
        step_trace[0, active] = eta
    x_cur = sign_step(x_prev, g_prev, eta)
    f_cur, g_cur, logits = ev(x_cur, need_grad=steps > 1)
    found = record(1, x_cur, logits, found)
    count = (f_cur > f_prev).to(torch.int64)  # the indicator for i = 0
    take = f_cur > f_prev  # ties keep x(0), as line 5
    f_max = torch.where(take, f_cur, f_prev)
    x_max = torch.where(take.view(view), x_cur, x_prev)
    g_max = None if g_cur is None else torch.where(take.view(view), g_cur, g_prev)
    f_max_last, eta_last, w_last = f_max.clone(), eta.clone(), 0
    num_groups = int(groups.max()) + 1 if early_stop and groups is not None and batch else 0  # one sync, not per step

    for k in range(1, steps):
        if early_stop and groups is not None:
            group_a = groups[active]
            hit = torch.zeros(num_groups, dtype=torch.bool, device=x.device)
            found = hit.index_fill_(0, group_a[found], True)[group_a]
        if early_stop and bool(found.any()):
            keep = (~found).nonzero().squeeze(1)
            done_rows = active[found]
            out_best[done_rows] = f_max[found]
            out_steps[done_rows[~out_success[done_rows]]] = k
            if keep.numel() == 0:
                active = keep
                break
            active, x_a, y_a = active[keep], x_a[keep], y_a[keep]
            t_a = None if t_a is None else t_a[keep]
            project = project.take(keep)
            x_prev, x_cur, g_cur, f_cur = x_prev[keep], x_cur[keep], g_cur[keep], f_cur[keep]
            eta, f_max, x_max, g_max = eta[keep], f_max[keep], x_max[keep], g_max[keep]
            count, f_max_last, eta_last, found = count[keep], f_max_last[keep], eta_last[keep], found[keep]
        if step_trace is not None:
            step_trace[k, active] = eta
        z = sign_step(x_cur, g_cur, eta)
        x_next = project(x_cur + alpha * (z - x_cur) + (1.0 - alpha) * (x_cur - x_prev))
        last = k == steps - 1
        f_next, g_next, logits = ev(x_next, need_grad=not last)
        found = record(k + 1, x_next, logits, found)
        improved = f_next > f_max
        f_max = torch.where(improved, f_next, f_max)
        x_max = torch.where(improved.view(view), x_next, x_max)
        if not last:
            g_max = torch.where(improved.view(view), g_next, g_max)
        if k in wset:
            condition1 = count.to(x.dtype) < rho * (k - w_last)
            condition2 = (eta == eta_last) & (f_max == f_max_last)
            reduce = condition1 | condition2
            eta_last, f_max_last, w_last = eta.clone(), f_max.clone(), k
            eta = torch.where(reduce, eta * 0.5, eta)
            x_next = torch.where(reduce.view(view), x_max, x_next)
            f_next = torch.where(reduce, f_max, f_next)
            if not last:
                g_next = torch.where(reduce.view(view), g_max, g_next)
            count = (f_next > f_cur).to(torch.int64)
        else:
            count = count + (f_next > f_cur).to(torch.int64)
        x_prev, x_cur, f_cur, g_cur = x_cur, x_next, f_next, g_next

    if active.numel():
        out_best[active] = f_max
        missing = torch.ones_like(found) if return_best else ~out_success[active]
        out_adv[active[missing]] = x_max[missing]
    return APGDRun(adv=out_adv, success=out_success, steps=out_steps, best_loss=out_best, step_trace=step_trace)
