"""Naive, independent implementations of the minimum-norm attacks, written from the papers, one sample and
one class at a time, in float64 where the model allows: the specification the batched attacks are tested
against on small inputs.

- DeepFool: Moosavi-Dezfooli et al. 2016, Alg. 2 and the reference code (``num_classes`` candidates fixed at
  the clean input, ``r_i = (|f'_l| + 1e-4) w'_l / ||w'_l||^2``, ``x_i = x + (1 + overshoot) r_tot``), plus
  clipping to [0, 1].
- C&W L2: Carlini & Wagner 2017, Sec. V.A and their ``l2_attack.py`` (tanh box, Adam, binary search on c).
- C&W L-inf and L0: Sec. V.B and V.C and their ``li_attack.py`` / ``l0_attack.py`` (tau schedule with warm
  restarts and a fresh Adam per attempt; pixel elimination around the L2 attack).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn


def _grad_of_logit_difference(model: nn.Module, x: Tensor, k: int, ref: int) -> tuple[float, Tensor]:
    x = x.clone().requires_grad_(True)
    z = model(x.unsqueeze(0))[0]
    diff = z[k] - z[ref]
    (g,) = torch.autograd.grad(diff, x)
    return diff.item(), g


def deepfool_one(model: nn.Module, x: Tensor, y: int, *, steps: int = 50, overshoot: float = 0.02,
                 candidates: int = 10, norm: str = "l2", target: Optional[int] = None) -> tuple[Tensor, int]:
    """DeepFool on one image ``x [C, H, W]``; returns ``(x_adv, iterations)``."""
    def logits_at(point: Tensor) -> Tensor:
        with torch.no_grad():
            return model(point.unsqueeze(0))[0]

    return deepfool_search(logits_at, lambda point, k, ref: _grad_of_logit_difference(model, point, k, ref), x, y,
                           x, steps=steps, overshoot=overshoot, candidates=candidates, norm=norm, target=target)


def deepfool_search(logits_at: Callable[[Tensor], Tensor],
                    difference_at: Callable[[Tensor, int, int], Tuple[float, Tensor]], x: Tensor, y: int,
                    start: Tensor, *, steps: int, overshoot: float, candidates: int, norm: str,
                    target: Optional[int]) -> Tuple[Tensor, int]:
    """DeepFool's loop (Algorithm 2 of the DeepFool paper) from ``start``, given the logits at a point and
    ``difference_at(point, k, ref) = (z_k - z_ref, its input gradient)``: candidates from the logits at
    ``start``, the iterate ``start + (1 + overshoot) r_total`` clipped to [0, 1]. Returns ``(x_adv, iterations)``."""
    z0 = logits_at(start)
    others = [c for c in z0.argsort(descending=True).tolist() if c != y][:min(candidates, z0.numel()) - 1]
    r_total = torch.zeros_like(x)
    x_adv = start.clone()
    for it in range(steps):
        z = logits_at(x_adv)
        pred = int(z.argmax())
        if (target is None and pred != y) or (target is not None and pred == target):
            return x_adv, it
        if target is None:
            pairs = [(k, y) for k in others]
        else:
            blocker = int(torch.cat([z[:target], z.new_tensor([-float("inf")]), z[target + 1:]]).argmax())
            pairs = [(target, blocker)]
        best = None
        for k, ref in pairs:
            f_k, w_k = difference_at(x_adv, k, ref)
            dual = w_k.norm() if norm == "l2" else w_k.abs().sum()
            dist = abs(f_k) / dual.item()
            if best is None or dist < best[0]:
                best = (dist, f_k, w_k)
        _, f_l, w_l = best
        if norm == "l2":
            r = (abs(f_l) + 1e-4) * w_l / (w_l.norm() ** 2)
        else:
            r = (abs(f_l) + 1e-4) * torch.sign(w_l) / w_l.abs().sum()
        r_total = r_total + r
        x_adv = (start + (1 + overshoot) * r_total).clamp(0, 1)
    return x_adv, steps


def cw_l2_one(model: nn.Module, x: Tensor, label: int, *, targeted: bool = False, binary_search_steps: int = 3,
              steps: int = 20, lr: float = 0.01, initial_const: float = 1e-3, confidence: float = 0.0,
              abort_early: bool = True, abort_checks: int = 10, abort_tol: float = 1e-4,
              warm_start: bool = False) -> tuple[Tensor, float]:
    """C&W L2 on one image, after Carlini's ``l2_attack.py``: returns ``(best_adv, best_l2_squared)``
    (the clean image and ``inf`` when no adversarial example was found). Carlini's early abort checks
    every ``steps // 10`` iterations for a loss above ``0.9999`` times the last check's; ``abort_checks``
    and ``abort_tol`` generalise the 10 and the ``1 - 0.9999``; ``warm_start`` starts each round from the
    best adversarial example so far instead of from ``x``."""
    adv, l2sq, _ = _cw_l2_masked(model, x, label, None, targeted=targeted,
                                 binary_search_steps=binary_search_steps, steps=steps, lr=lr,
                                 initial_const=initial_const, confidence=confidence, abort_early=abort_early,
                                 abort_checks=abort_checks, abort_tol=abort_tol, warm_start=warm_start)
    return adv, l2sq


def _margin(model: nn.Module, x_new: Tensor, label: int, targeted: bool, confidence: float):
    z = model(x_new.unsqueeze(0))[0]
    others = [z[i] for i in range(z.numel()) if i != label]
    other, real = torch.stack(others).max(), z[label]
    margin = other - real if targeted else real - other
    return torch.clamp(margin, min=-confidence), -margin.item() > confidence


def cw_linf_one(model: nn.Module, x: Tensor, label: int, *, targeted: bool = False, steps: int = 20,
                lr: float = 0.01, initial_const: float = 1e-3, confidence: float = 0.0,
                max_attempts: int = 64) -> tuple[Tensor, int, float]:
    """C&W L-inf on one image, after Sec. V.B and Carlini's ``li_attack.py``: minimise
    ``c f(x') + sum_i max(|x'_i - x_i| - tau, 0)`` with Adam in tanh space. An attempt ends when it succeeds
    (loss below ``1e-4 c`` and adversarial: tau becomes ``0.9 min(tau, ||x' - x||_inf)``) or after ``steps``
    iterations (c doubles); the next attempt starts from the last success (or x) with a fresh Adam. The sample
    ends when tau < 1/256 or c > 20, or after ``max_attempts * steps`` iterations in all. Returns ``(last
    success or x, iterations, its L-inf distance or inf)``."""
    def to_w(img):
        return torch.atanh((2 * img - 1) * 0.999999)

    tau, const, result, found, used = 1.0, initial_const, x.clone(), False, 0
    w, m, v, t = to_w(x), torch.zeros_like(x), torch.zeros_like(x), 0
    for _ in range(max_attempts * steps):
        w_req = w.clone().requires_grad_(True)
        x_new = (torch.tanh(w_req) + 1) / 2
        f, adversarial = _margin(model, x_new, label, targeted, confidence)
        loss = const * f + torch.relu((x_new - x).abs() - tau).sum()
        (g,) = torch.autograd.grad(loss, w_req)
        succeeded = loss.item() < 1e-4 * const and adversarial
        t += 1
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - lr * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
        used += 1
        if succeeded:
            result, found = x_new.detach().clone(), True
            tau = min(tau, (x_new - x).abs().max().item()) * 0.9
        elif t >= steps:
            const *= 2
        if succeeded or t >= steps:
            w, m, v, t = to_w(result), torch.zeros_like(x), torch.zeros_like(x), 0
        if tau < 1 / 256 or const > 20:
            break
    return result, used, (result - x).abs().max().item() if found else float("inf")


def _cw_l2_masked(model, x, label, mask, *, targeted, confidence, **search):
    """:func:`cw_l2_one` restricted to the pixels where ``mask`` is True (the others keep their start value,
    their Adam state zero; ``mask=None``: every pixel); also returns the iterations it ran."""
    return cw_l2_search(lambda x_new: _margin(model, x_new, label, targeted, confidence), x, mask=mask, **search)


def cw_l2_search(objective: Callable[[Tensor], Tuple[Tensor, bool]], x: Tensor, *, start: Optional[Tensor] = None,
                 mask: Optional[Tensor] = None, binary_search_steps: int, steps: int, lr: float,
                 initial_const: float, abort_early: bool, abort_checks: int, abort_tol: float,
                 warm_start: bool = False) -> Tuple[Tensor, float, int]:
    """Carlini's binary search over ``c`` with Adam in tanh space, minimising ``||x' - x||^2 + c f(x')`` where
    ``objective(x') = (f, adversarial)``; each round starts at ``start`` (default ``x``), only the pixels where
    ``mask`` is True move. Returns ``(best_adv, best_l2_squared, iterations)``."""
    mask = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
    lower, upper, const = 0.0, 1e10, initial_const
    best_l2sq, best_adv, used = float("inf"), x.clone(), 0
    w_start = torch.atanh((2 * (x if start is None else start) - 1) * 0.999999)
    for outer in range(binary_search_steps):
        if binary_search_steps >= 10 and outer == binary_search_steps - 1:
            const = upper if upper < 1e10 else const
        w = w_start.clone() if not (warm_start and best_l2sq < float("inf")) else \
            torch.atanh((2 * best_adv - 1) * 0.999999)
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        prev, found = float("inf"), False
        for it in range(steps):
            w_req = w.clone().requires_grad_(True)
            x_new = (torch.tanh(w_req) + 1) / 2
            if it > 0:  # frozen pixels are x itself (in the first iteration, x(w) of their start)
                x_new = torch.where(mask, x_new, x)
            f, adversarial = objective(x_new)
            l2sq = ((x_new - x) ** 2).sum()
            loss = l2sq + const * f
            (g,) = torch.autograd.grad(loss, w_req)
            used += 1
            if adversarial:
                found = True
                if l2sq.item() < best_l2sq:
                    best_l2sq, best_adv = l2sq.item(), x_new.detach().clone()
            t = it + 1
            m = torch.where(mask, 0.9 * m + 0.1 * g, 0.0)
            v = torch.where(mask, 0.999 * v + 0.001 * g * g, 0.0)
            w = torch.where(mask, w - lr * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8), w_start)
            if abort_early and it % max(1, -(-steps // abort_checks)) == 0 and it != steps - 1:
                if loss.item() > (1 - abort_tol) * prev:
                    break
                prev = loss.item()
        if found:
            upper = min(upper, const)
            const = (lower + upper) / 2
        else:
            lower = max(lower, const)
            const = (lower + upper) / 2 if upper < 1e10 else const * 10
    return best_adv, best_l2sq, used


def cw_l0_one(model: nn.Module, x: Tensor, label: int, *, targeted: bool = False, binary_search_steps: int = 3,
              steps: int = 20, lr: float = 0.01, initial_const: float = 1e-3, confidence: float = 0.0,
              abort_early: bool = True, abort_checks: int = 10, abort_tol: float = 1e-4,
              warm_start: bool = False) -> tuple[Tensor, int, float]:
    """C&W L0 on one image ``[C, H, W]``, after Sec. V.C: run the L2 attack on the allowed pixels; while it
    succeeds, freeze the allowed pixels with the smallest ``sum_c |x'_c - x_c| |grad_c f|``, in increasing
    order, at most ``ceil(0.3 sqrt(changed pixels))`` (at least one) and through the first whose score exceeds
    0.01, and repeat. Returns ``(last success or x, iterations, changed pixels or inf)``."""
    kw = dict(targeted=targeted, binary_search_steps=binary_search_steps, steps=steps, lr=lr,
              initial_const=initial_const, confidence=confidence, abort_early=abort_early,
              abort_checks=abort_checks, abort_tol=abort_tol, warm_start=warm_start)
    allowed = torch.ones(x.shape[1:], dtype=torch.bool)  # [H, W], shared by the channels
    result, found, used = x.clone(), False, 0
    while True:
        adv, l2sq, iterations = _cw_l2_masked(model, x, label, allowed.expand_as(x), **kw)
        used += iterations
        if l2sq == float("inf"):
            break
        result, found = adv, True
        adv_req = adv.clone().requires_grad_(True)
        f, _ = _margin(model, adv_req, label, targeted, confidence)
        (g,) = torch.autograd.grad(f, adv_req)
        score = ((adv - x).abs() * g.abs()).sum(dim=0)  # [H, W]
        changed = int(((adv - x).abs().amax(dim=0) > 1e-4).sum())
        limit = max(1, math.ceil(0.3 * math.sqrt(changed)))
        candidates = sorted((score[i, j].item(), i * x.shape[2] + j) for i in range(x.shape[1])
                            for j in range(x.shape[2]) if allowed[i, j])
        frozen = 0
        for value, flat in candidates:
            if frozen >= limit:
                break
            allowed[flat // x.shape[2], flat % x.shape[2]] = False
            frozen += 1
            if value > 0.01:
                break
        if not bool(allowed.any()):
            break
    pixels = int(((result - x).abs() > 1e-4).any(dim=0).sum())
    return result, used, float(pixels) if found else float("inf")
