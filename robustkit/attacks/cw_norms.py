"""C&W's margin loss and its L-inf and L0 attacks (Carlini & Wagner 2017, Sec. V.B and V.C), batched per sample.

L-inf: minimise ``c f(x') + sum_i max(|x'_i - x_i| - tau, 0)`` with Adam in tanh space. When a sample's
attempt succeeds (loss below ``1e-4 c`` and adversarial), tau drops to ``0.9 min(tau, ||x' - x||_inf)`` and
the next attempt starts warm from x'; when an attempt runs out of ``steps``, c doubles (from
``initial_const`` up to 20). A sample ends when tau < 1/256 or c > 20, with its last success.

L0: run the L2 attack on the pixels still allowed to change; while it succeeds, freeze the pixels whose
``|x'_i - x_i| |grad_i|`` is smallest (at least one, at most ``0.3 sqrt(changed pixels)``, stopping at the
first with a change-weighted gradient above 0.01) and repeat; return the last success.

Every sample runs its own schedule (tau, c, pixel set) inside one batch; finished samples leave it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Tuple

import torch
from torch import Tensor

from robustkit.attacks.base import AttackResult

if TYPE_CHECKING:  # pragma: no cover
    from robustkit.attacks.cw import CW

_TAU_DECREASE = 0.9
_LARGEST_CONST_LINF = 20.0
_MIN_TAU = 1.0 / 256
# Total Adam iterations a sample may use, in units of ``steps`` (one attempt); bounds the schedule.
_MAX_ATTEMPTS = 64


def margin_loss(logits: Tensor, label: Tensor, targeted: bool, confidence: float) -> Tuple[Tensor, Tensor]:
    """C&W's f (Eq. 6 of the paper, their chosen f_6) and whether it counts as adversarial, per sample.

    ``label`` is the target (targeted) or the true class (untargeted). Returns ``(f [B], success [B])``
    with ``success`` = the margin exceeds ``confidence`` (the paper's high-confidence criterion; at 0 it
    is "the predicted class is the target" or "is not the label").
    """
    real = logits.gather(1, label.unsqueeze(1)).squeeze(1)
    other = logits.scatter(1, label.unsqueeze(1), float("-inf")).amax(dim=1)
    margin = other - real if targeted else real - other
    return margin.clamp_min(-confidence), -margin.detach() > confidence


def to_w(x: Tensor) -> Tensor:
    """C&W's tanh-box change of variables, ``x = (tanh(w) + 1) / 2`` solved for ``w``; Carlini's 0.999999
    keeps atanh finite at 0 and 1."""
    return torch.atanh((2 * x - 1) * (1 - 1e-6))


def run_linf(attack: "CW", x: Tensor, y: Tensor, target: Optional[Tensor]) -> AttackResult:
    batch = x.shape[0]
    label = target if target is not None else y
    targeted = target is not None
    result = x.clone()  # the last successful iterate per sample (x where none)
    found = torch.zeros(batch, dtype=torch.bool, device=x.device)
    steps_used = torch.zeros(batch, dtype=torch.int64, device=x.device)
    active = torch.arange(batch, device=x.device)
    tau = torch.ones(batch, dtype=x.dtype, device=x.device)
    const = torch.full_like(tau, attack.initial_const)
    start = to_w(x)
    w, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    t = torch.zeros(batch, dtype=x.dtype, device=x.device)  # Adam's per-sample step count
    view = (-1,) + (1,) * (x.dim() - 1)
    beta1, beta2 = 0.9, 0.999
    for _ in range(_MAX_ATTEMPTS * attack.steps):
        x0, lab = x[active], label[active]
        w_req = w.detach().requires_grad_(True)
        x_adv = (torch.tanh(w_req) + 1) / 2
        f, adversarial = margin_loss(attack.logits(x_adv), lab, targeted, attack.confidence)
        excess = torch.relu((x_adv - x0).abs() - tau.view(view)).flatten(1).sum(dim=1)
        loss = const * f + excess
        (grad,) = torch.autograd.grad(loss.sum(), w_req)
        succeeded = (loss.detach() < 1e-4 * const) & adversarial
        t = t + 1
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        step = (m / (1 - beta1 ** t).view(view)) / ((v / (1 - beta2 ** t).view(view)).sqrt() + 1e-8)
        w = w - attack.lr * step
        steps_used[active] += 1
        out_of_steps = (t >= attack.steps) & ~succeeded
        x_now = x_adv.detach()
        # success: record, shrink tau, restart warm from here; out of steps: double c, restart from the last
        # success (Carlini's warm start).
        result[active] = torch.where(succeeded.view(view), x_now, result[active])
        found[active] |= succeeded
        reached = (x_now - x0).flatten(1).abs().amax(dim=1)
        tau = torch.where(succeeded, torch.minimum(tau, reached) * _TAU_DECREASE, tau)
        const = torch.where(out_of_steps, const * 2, const)
        restart = succeeded | out_of_steps
        w = torch.where(restart.view(view), to_w(result[active]), w)
        m = torch.where(restart.view(view), torch.zeros_like(m), m)
        v = torch.where(restart.view(view), torch.zeros_like(v), v)
        t = torch.where(restart, torch.zeros_like(t), t)
        done = (tau < _MIN_TAU) | (const > _LARGEST_CONST_LINF)
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            active, tau, const, w, m, v, t = (active[keep], tau[keep], const[keep], w[keep], m[keep], v[keep],
                                              t[keep])
    linf = torch.where(found, (result - x).flatten(1).abs().amax(dim=1), x.new_full((batch,), math.inf))
    return attack.make_result(x, result, y, target, steps_used, extras={"linf": linf})


def run_l0(attack: "CW", x: Tensor, y: Tensor, target: Optional[Tensor]) -> AttackResult:
    batch = x.shape[0]
    # Pixels are frozen across channels, as in the paper: the mask is [B, 1, H, W] broadcast over C.
    pixel_shape = (batch, 1) + tuple(x.shape[2:]) if x.dim() >= 3 else x.shape
    allowed = torch.ones(pixel_shape, dtype=torch.bool, device=x.device)
    result = x.clone()
    found = torch.zeros(batch, dtype=torch.bool, device=x.device)
    steps_used = torch.zeros(batch, dtype=torch.int64, device=x.device)
    active = torch.arange(batch, device=x.device)
    while active.numel() > 0:
        x_a, y_a = x[active], y[active]
        t_a = None if target is None else target[active]
        mask = allowed[active].expand_as(x_a).contiguous()
        adv, l2sq, _, steps = attack.l2_search(x_a, y_a, t_a, mask=mask)
        steps_used[active] += steps
        success = torch.isfinite(l2sq)
        result[active] = torch.where(success.view((-1,) + (1,) * (x.dim() - 1)), adv, result[active])
        found[active] |= success
        # importance of each still-allowed pixel: |change| x |gradient of the margin loss|, summed over channels
        adv_req = adv.detach().requires_grad_(True)
        f, _ = margin_loss(attack.logits(adv_req), t_a if t_a is not None else y_a, t_a is not None,
                           attack.confidence)
        (grad,) = torch.autograd.grad(f.sum(), adv_req)
        change = ((adv - x_a).abs() * grad.abs()).sum(dim=1, keepdim=True) if x.dim() >= 3 else \
            (adv - x_a).abs() * grad.abs()
        still = allowed[active]
        changed = (adv - x_a).abs().amax(dim=1, keepdim=True) > 1e-4 if x.dim() >= 3 else (adv - x_a).abs() > 1e-4
        score = torch.where(still, change, torch.full_like(change, math.inf)).flatten(1)  # [Ba, P]
        order = score.argsort(dim=1)
        sorted_score = score.gather(1, order)
        limit = (0.3 * changed.flatten(1).sum(dim=1).float().sqrt()).ceil().clamp_min(1)  # [Ba]
        rank = torch.arange(score.shape[1], device=x.device).unsqueeze(0)
        # freeze in order of importance: up to `limit`, through the first pixel that mattered (> 0.01)
        mattered = (sorted_score > 0.01).float().cumsum(dim=1)
        first_big = torch.where(mattered.sum(dim=1) > 0, (mattered == 0).sum(dim=1), score.shape[1])
        count = torch.minimum(limit.long(), first_big + 1)
        freeze_sorted = (rank < count.unsqueeze(1)) & torch.isfinite(sorted_score)
        freeze = torch.zeros_like(freeze_sorted).scatter(1, order, freeze_sorted)
        new_allowed = still.flatten(1) & ~freeze
        new_allowed = torch.where(success.unsqueeze(1), new_allowed, still.flatten(1))
        allowed[active] = new_allowed.view_as(still)
        keep = (success & new_allowed.any(dim=1)).nonzero().squeeze(1)
        active = active[keep]
    l0 = ((result - x).abs() > 1e-4).flatten(2).any(dim=1).sum(dim=1) if x.dim() >= 3 else \
        ((result - x).abs() > 1e-4).flatten(1).sum(dim=1)
    l0 = torch.where(found, l0.to(x.dtype), x.new_full((batch,), math.inf))
    return attack.make_result(x, result, y, target, steps_used, extras={"l0": l0})
