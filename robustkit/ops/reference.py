"""The specification of every fused op: float64 PyTorch code with exactly the op's semantics.

Kernels are tested against these (and, separately, against naive implementations written from the papers
in tests/reference/). They are written for clarity, not speed, and upcast everything to float64.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def ensemble_temperature_ce(logits: Tensor, target: Tensor, *, temperature: float = 1.0,
                            soft_weight: float = 1.0, hard_weight: float = 0.0) -> Tensor:
    """Per-sample ``[B]`` loss of ``robustkit.ops.ensemble_temperature_ce`` (fusion="loss", reduction="none")."""
    z = logits.double()  # [K, B, C]
    loss = z.new_zeros(z.shape[1])
    for k in range(z.shape[0]):
        loss = loss + soft_weight * F.cross_entropy(z[k] / temperature, target, reduction="none")
        loss = loss + hard_weight * F.cross_entropy(z[k], target, reduction="none")
    return loss


def ensemble_temperature_ce_grad(logits: Tensor, target: Tensor, grad_loss: Tensor, *, temperature: float = 1.0,
                                 soft_weight: float = 1.0, hard_weight: float = 0.0) -> Tensor:
    """``d(sum_b grad_loss_b * loss_b) / d logits``, ``[K, B, C]``, in closed form:
    ``grad_loss * (soft_weight / T (softmax(z/T) - onehot) + hard_weight (softmax(z) - onehot))``."""
    z = logits.double()
    onehot = F.one_hot(target, z.shape[2]).double().unsqueeze(0)
    g = grad_loss.double().view(1, -1, 1)
    soft = soft_weight / temperature * (torch.softmax(z / temperature, dim=2) - onehot)
    hard = hard_weight * (torch.softmax(z, dim=2) - onehot)
    return g * (soft + hard)


def sign_momentum_step(x_adv: Tensor, x_orig: Tensor, grad: Tensor, momentum: Optional[Tensor], *,
                       step_size: Union[float, Tensor], eps: Union[float, Tensor], decay: float = 1.0,
                       grad_norm: str = "l1", norm: str = "linf",
                       clip: Optional[Tuple[float, float]] = (0.0, 1.0)) -> Tuple[Tensor, Optional[Tensor]]:
    """Out-of-place float64 ``robustkit.ops.sign_momentum_step``: returns the new ``(x_adv, momentum)``."""
    x, x0, gr = x_adv.double(), x_orig.double(), grad.double()
    batch = x.shape[0]
    view = (batch,) + (1,) * (x.dim() - 1)

    def per_sample(v):
        return v.double().view(view) if isinstance(v, Tensor) else torch.full(view, float(v), dtype=torch.float64)

    step, radius = per_sample(step_size), per_sample(eps)
    if grad_norm == "l1":
        gr = gr / gr.abs().flatten(1).sum(1).clamp_min(1e-12).view(view)
    g = gr if momentum is None else decay * momentum.double() + gr
    if norm == "linf":
        moved = x + step * torch.sign(torch.nan_to_num(g, nan=0.0))
        projected = torch.max(torch.min(moved, x0 + radius), x0 - radius)
    else:
        g_norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        moved = x + torch.nan_to_num(step * g / g_norm, nan=0.0)
        delta = moved - x0
        delta_norm = delta.flatten(1).norm(dim=1).view(view)
        factor = torch.where(delta_norm > radius, radius / delta_norm, torch.ones_like(delta_norm))
        projected = x0 + delta * factor
    lo, hi = (-math.inf, math.inf) if clip is None else clip
    return projected.clamp(lo, hi), (None if momentum is None else g)


def deepfool_step(f: Tensor, w: Tensor, *, norm: str = "l2") -> Tuple[Tensor, Tensor]:
    """float64 ``robustkit.ops.deepfool_step``: ``(step [B, D], index [B])``, differentiable by autograd
    (the argmin index is a constant, exactly as the op's backward)."""
    f64, w64 = f.double(), w.double()
    # the choice of l is a constant of the step: computed without autograd, so the gradient of an unchosen
    # candidate is exactly 0 (autograd through all K norms would give 0 * NaN = NaN for a NaN it holds)
    with torch.no_grad():
        if norm == "l2":
            norm_value = (w64 * w64).sum(dim=2).clamp_min(1e-24).sqrt()  # [B, K], ||w_k||_2
        else:
            norm_value = w64.abs().sum(dim=2).clamp_min(1e-12)  # [B, K], ||w_k||_1
        distance = f64.abs() / norm_value
        # argmin's first-minimum rule; NaN distances lose to numbers.
        index = torch.nan_to_num(distance, nan=math.inf).argmin(dim=1)
    rows = torch.arange(f64.shape[0])
    f_l, w_l = f64[rows, index], w64[rows, index]
    if norm == "l2":
        sum_l, floor = (w_l * w_l).sum(dim=1), 1e-24  # ||w_l||_2^2
    else:
        sum_l, floor = w_l.abs().sum(dim=1), 1e-12  # ||w_l||_1
    denom = torch.where(sum_l > floor, sum_l, torch.full_like(sum_l, floor))
    scale = (f_l.abs() + 1e-4) / denom
    direction = w_l if norm == "l2" else torch.sign(w_l)
    return scale.unsqueeze(1) * direction, index


def cw_l2_step(w: Tensor, x_orig: Tensor, loss_grad: Tensor, success: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
               best_adv: Tensor, best_l2sq: Tensor, *, step: int, lr: float = 0.01,
               betas: Tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
               clip: Tuple[float, float] = (0.0, 1.0)) -> dict:
    """Out-of-place float64 ``robustkit.ops.cw_l2_step``, written with tanh and autograd instead of the op's
    closed forms. Returns the new state as a dict (w, x, exp_avg, exp_avg_sq, best_adv, best_l2sq) and the
    ``l2sq`` of the iterate the step started from."""
    lo, hi = clip
    beta1, beta2 = betas
    w64 = w.double().detach().requires_grad_(True)
    x = lo + (hi - lo) * (torch.tanh(w64) + 1) / 2
    # Per sample over the feature dims. [B] inputs have none: sum(dim=()) would reduce over every dim.
    sq = (x - x_orig.double()) ** 2
    l2sq = sq.sum(dim=tuple(range(1, x.dim()))) if x.dim() > 1 else sq
    # d/dw of ||x - x0||^2 + <loss_grad, x> is the C&W gradient with loss_grad = d(c f)/dx held fixed.
    objective = l2sq.sum() + (loss_grad.double() * x).sum()
    (g,) = torch.autograd.grad(objective, w64)
    m = beta1 * exp_avg.double() + (1 - beta1) * g
    v = beta2 * exp_avg_sq.double() + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    w_new = w64.detach() - lr * m_hat / (v_hat.sqrt() + adam_eps)
    x_now, l2sq = x.detach(), l2sq.detach()
    improved = success & (l2sq < best_l2sq.double())
    view = (-1,) + (1,) * (x.dim() - 1)
    return {
        "w": w_new, "x": lo + (hi - lo) * (torch.tanh(w_new) + 1) / 2, "exp_avg": m, "exp_avg_sq": v,
        "best_adv": torch.where(improved.view(view), x_now, best_adv.double()),
        "best_l2sq": torch.where(improved, l2sq, best_l2sq.double()), "l2sq": l2sq,
    }


def conv2d_input_grad(grad_output: Tensor, weight: Tensor, input_size, padding=(0, 0)) -> Tensor:
    """float64 ``robustkit.ops.conv2d_input_grad``: the transposed convolution of ``grad_output`` by ``weight``
    (PyTorch's own definition of a stride-1 conv2d's input gradient)."""
    out = torch.nn.functional.conv_transpose2d(grad_output.double(), weight.double(), padding=tuple(padding))
    assert tuple(out.shape[-2:]) == tuple(input_size), "grad_output's plane does not match input_size"
    return out
