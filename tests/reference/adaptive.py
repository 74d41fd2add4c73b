"""Naive references for the adaptive attacks, written from the papers, one sample at a time, in float64.

* :func:`naive_dlr`: Eq. 5 of Croce and Hein 2020 (and its targeted form) with Python sorting.
* :func:`naive_checkpoints` and :func:`naive_apgd`: Algorithm 1 and Sec. 3.2 of the APGD paper, literally,
  for a single sample, with autograd for the gradient.
* :func:`naive_hyperplane_projection`: the FAB projection by bisection on the step length instead of the
  library's sort.
* :func:`naive_eot_deepfool` and :func:`naive_eot_cw_l2`: DeepFool (Alg. 2) and C&W L2 (Sec. V.A) for one
  sample from a given start, with the expectation over transformation written as a loop over the draws
  (Athalye et al. 2018, Sec. 4): every value and gradient is the mean of the draws' values and gradients, a
  point is adversarial when the draws' mean logits say so.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from tests.reference.minnorm import cw_l2_search, deepfool_search


def naive_dlr(z: List[float], y: int, target: Optional[int] = None) -> float:
    """DLR of one logit vector (Python floats)."""
    ordered = sorted(z, reverse=True)
    if target is None:
        best_other = max(v for i, v in enumerate(z) if i != y)
        return -(z[y] - best_other) / (ordered[0] - ordered[2] + 1e-12)
    return -(z[y] - z[target]) / (ordered[0] - 0.5 * (ordered[2] + ordered[3]) + 1e-12)


def naive_checkpoints(n_iter: int) -> List[int]:
    """``W = {ceil(p_j N_iter)}`` with ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``;
    the float ``p_j`` are rounded to 1e-9 before ``ceil`` so that 0.41 * 100 counts as 41."""
    p = [0.0, 0.22]
    while p[-1] <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(pj * n_iter, 9)) for pj in p[1:] if 1 <= math.ceil(round(pj * n_iter, 9)) < n_iter})


def _project(point: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        return torch.min(torch.max(point, x - eps), x + eps).clamp(0, 1)
    delta = point - x
    length = delta.norm()
    if length > eps:
        delta = delta * (eps / length)
    return (x + delta).clamp(0, 1)


def naive_apgd(f: Callable[[Tensor], Tensor], x: Tensor, x0: Tensor, eps: float, norm: str, n_iter: int,
               rho: float = 0.75, alpha: float = 0.75) -> Tuple[List[float], Tensor, float]:
    """Algorithm 1 for one sample: ``f`` maps a point ``[1, ...]`` to the scalar objective. Returns the step
    size used at each iteration ``k = 0 .. n_iter - 1``, ``x_max`` and ``f_max``.

    Condition 1 at checkpoint ``w_j``: ``sum_{i = w_{j-1}}^{w_j - 1} 1[f(x(i+1)) > f(x(i))] < rho (w_j - w_{j-1})``;
    Condition 2: ``eta(w_{j-1}) == eta(w_j)`` and ``f_max(w_{j-1}) == f_max(w_j)``, where ``eta(w)`` is the step
    size in use when iteration ``w`` ran.
    """
    def value_and_grad(point):
        p = point.detach().clone().requires_grad_(True)
        value = f(p)
        (g,) = torch.autograd.grad(value, p)
        return float(value.detach()), g

    def step(point, g, eta):
        direction = torch.sign(g) if norm == "linf" else g / max(float(g.norm()), 1e-12)
        return _project(point + eta * direction, x, eps, norm)

    checkpoints = naive_checkpoints(n_iter)
    eta = 2.0 * eps
    etas = [eta]
    points = [x0.clone()]
    values = []
    v0, g0 = value_and_grad(points[0])
    values.append(v0)
    grads = [g0]
    points.append(step(points[0], g0, eta))
    v1, g1 = value_and_grad(points[1])
    values.append(v1)
    grads.append(g1)
    f_max = max(v0, v1)
    x_max, g_max = (points[0], g0) if f_max == v0 else (points[1], g1)
    # the state remembered at the previous checkpoint (w_0 = 0)
    last_w, eta_at_last, fmax_at_last = 0, eta, f_max
    for k in range(1, n_iter):
        etas.append(eta)
        z = step(points[k], grads[k], eta)
        new = _project(points[k] + alpha * (z - points[k]) + (1 - alpha) * (points[k] - points[k - 1]), x, eps, norm)
        v, g = value_and_grad(new)
        if v > f_max:
            x_max, g_max, f_max = new, g, v
        if k in checkpoints:
            increases = sum(1 for i in range(last_w, k) if values[i + 1] > values[i])
            condition1 = increases < rho * (k - last_w)
            condition2 = eta_at_last == eta and fmax_at_last == f_max
            last_w, eta_at_last, fmax_at_last = k, eta, f_max
            if condition1 or condition2:
                eta = eta / 2
                new, v, g = x_max, f_max, g_max
        points.append(new)
        values.append(v)
        grads.append(g)
    return etas, x_max, f_max


def naive_hyperplane_projection(point: Tensor, w: Tensor, rhs: float, norm: str, iters: int = 200) -> Tensor:
    """The minimal-norm ``d`` with ``w . d = rhs`` inside the [0, 1] box, by bisection on ``t`` in
    ``d_j = sign(w_j s) min(t c_j, room_j)`` (``s = sign(rhs)``), one sample ``[D]``."""
    s = 1.0 if rhs >= 0 else -1.0
    direction = torch.sign(w * s)
    room = torch.where(w * s > 0, 1 - point, point)
    coef = torch.ones_like(w) if norm == "linf" else w.abs()

    def reach(t):
        return float((w * s * direction * torch.minimum(t * coef, room)).sum())

    goal = abs(rhs)
    hi = 1.0
    while reach(hi) < goal and hi < 1e12:
        hi *= 2
    if reach(hi) < goal:
        return direction * room
    lo = 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if reach(mid) < goal:
            lo = mid
        else:
            hi = mid
    return direction * torch.minimum(hi * coef, room)


Draw = Callable[[Tensor], Tensor]  # one stochastic forward: [1, ...] -> [1, C]


def _mean_logits(draws: List[Draw], point: Tensor) -> Tensor:
    with torch.no_grad():
        return sum(d(point.unsqueeze(0))[0] for d in draws) / len(draws)


def _mean_difference_and_grad(draws: List[Draw], point: Tensor, k: int, ref: int) -> Tuple[float, Tensor]:
    """``mean_d (z_k - z_ref)`` and its gradient, one draw at a time."""
    values, grads = [], []
    for d in draws:
        p = point.clone().requires_grad_(True)
        z = d(p.unsqueeze(0))[0]
        (g,) = torch.autograd.grad(z[k] - z[ref], p)
        values.append(float((z[k] - z[ref]).detach()))
        grads.append(g)
    return sum(values) / len(draws), sum(grads) / len(draws)


def naive_eot_deepfool(draws: List[Draw], x: Tensor, y: int, start: Tensor, *, steps: int = 50,
                       overshoot: float = 0.02, candidates: int = 10, norm: str = "l2",
                       target: Optional[int] = None) -> Tuple[Tensor, int]:
    """DeepFool on one image from ``start``: candidates from the mean logits at ``start``, the iterate
    ``start + (1 + overshoot) r_total`` clipped to [0, 1]. Returns ``(x_adv, iterations)``."""
    return deepfool_search(lambda point: _mean_logits(draws, point),
                           lambda point, k, ref: _mean_difference_and_grad(draws, point, k, ref), x, y, start,
                           steps=steps, overshoot=overshoot, candidates=candidates, norm=norm, target=target)


def _margin(z: Tensor, label: int, targeted: bool) -> Tensor:
    other = torch.stack([z[i] for i in range(z.numel()) if i != label]).max()
    return other - z[label] if targeted else z[label] - other


def naive_eot_cw_l2(draws: List[Draw], x: Tensor, label: int, start: Tensor, *, targeted: bool = False,
                    binary_search_steps: int = 3, steps: int = 20, lr: float = 0.01, initial_const: float = 1e-3,
                    confidence: float = 0.0, abort_early: bool = True, abort_checks: int = 10,
                    abort_tol: float = 1e-4) -> Tuple[Tensor, float]:
    """C&W L2 on one image after Carlini's ``l2_attack.py``, each round's Adam starting at ``start`` (``x``
    gives the plain attack), with ``f = mean_d max(margin_d, -confidence)``; a point is adversarial when the
    margin of the mean logits exceeds ``confidence``. Returns ``(best_adv, best_l2_squared)``."""
    def objective(x_new: Tensor):
        logits = [d(x_new.unsqueeze(0))[0] for d in draws]
        f = sum(torch.clamp(_margin(z, label, targeted), min=-confidence) for z in logits) / len(draws)
        mean_margin = _margin(sum(z.detach() for z in logits) / len(draws), label, targeted)
        return f, -mean_margin.item() > confidence

    best_adv, best_l2sq, _ = cw_l2_search(objective, x, start=start, binary_search_steps=binary_search_steps,
                                          steps=steps, lr=lr, initial_const=initial_const, abort_early=abort_early,
                                          abort_checks=abort_checks, abort_tol=abort_tol)
    return best_adv, best_l2sq


def naive_random_start(x: Tensor, radius: List[float], norm: str, generator: torch.Generator) -> Tensor:
    """Points at distance ``radius[b]`` from ``x[b]``: L-inf, uniform noise in [-1, 1] scaled to L-inf norm
    ``radius``; L2, Gaussian noise scaled to L2 norm ``radius``; clipped to [0, 1]. One draw for the batch."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    else:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    out = []
    for b in range(x.shape[0]):
        size = float(noise[b].abs().max()) if norm == "linf" else float(noise[b].norm())
        out.append((x[b] + noise[b] / size * radius[b]).clamp(0, 1))
    return torch.stack(out)
