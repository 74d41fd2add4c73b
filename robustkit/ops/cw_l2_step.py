"""One fused Adam step of the Carlini-Wagner L2 attack in tanh space (Carlini & Wagner 2017, Sec. V.A)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from robustkit import _ext  # registers torch.ops.robustkit when the extension is built


def cw_l2_step(
    w: Tensor,
    x: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    best_adv: Tensor,
    best_l2sq: Tensor,
    x_orig: Tensor,
    loss_grad: Tensor,
    success: Tensor,
    *,
    step: int,
    lr: float = 0.01,
    betas: Tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    clip: Tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Best-so-far tracking and one Adam step of C&W L2, in place, in two passes over the elements.

    The attack optimises ``w`` with ``x(w) = lo + (hi - lo) (tanh(w) + 1) / 2`` (the box ``clip = (lo, hi)``
    holds by construction) and the objective ``||x - x_orig||_2^2 + c f(x)``. Per sample b::

        l2sq_b = ||x_b - x_orig_b||_2^2                               (returned)
        if success_b and l2sq_b < best_l2sq_b:  best_l2sq_b = l2sq_b, best_adv_b = x_b
        g = (2 (x - x_orig) + loss_grad) * dx/dw,  dx/dw = 2 (x - lo)(hi - x) / (hi - lo)
        Adam (bias-corrected, step count ``step``) on w with g; then x <- x(w)

    Args:
        w: ``[B, ...]`` tanh-space variables, float32 or float64, contiguous; updated.
        x: ``[B, ...]`` must hold ``x(w)`` on entry (the iterate the model was evaluated at); receives
            ``x(w)`` of the updated ``w``, the next iterate.
        exp_avg, exp_avg_sq: ``[B, ...]`` Adam moments (zeros before the first step); updated.
        best_adv, best_l2sq: ``[B, ...]`` and ``[B]``, the smallest successful iterate so far and its
            squared L2 distance (``inf`` where none); updated.
        x_orig: ``[B, ...]`` the clean inputs.
        loss_grad: ``[B, ...]`` ``d(c * f(x)) / dx`` at ``x``, the gradient of the constant-weighted
            margin loss computed by autograd.
        success: bool ``[B]``, whether ``x`` is adversarial (with the attack's confidence margin).
        step: Adam's step count, from 1 (reset it with the moments).
        lr, betas, adam_eps: Adam's hyperparameters (``adam_eps`` is Adam's epsilon, not a perturbation
            budget). Every coefficient (1 - beta and the bias corrections included) is the exact value
            rounded once to the state's dtype.
        The updated buffers must be distinct memory, none shared with another argument (an error).
        clip: the box ``(lo, hi)``, finite, ``lo < hi``.

    Returns:
        ``[B]`` squared L2 distance of the ``x`` passed in (for the attack's loss and early abort).

    Example::

        >>> x0 = torch.rand(4, 784); w = torch.atanh((2 * x0 - 1) * 0.999999); x = (torch.tanh(w) + 1) / 2
        >>> m, v, best = torch.zeros_like(w), torch.zeros_like(w), x0.clone()
        >>> best_l2sq = torch.full((4,), float("inf"))
        >>> l2sq = cw_l2_step(w, x, m, v, best, best_l2sq, x0, torch.randn_like(x0),
        ...                   torch.zeros(4, dtype=torch.bool), step=1)
    """
    _ext.require_ops()
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"cw_l2_step: step must be an int >= 1, got {type(step).__name__}")
    if len(betas) != 2:
        raise ValueError(f"cw_l2_step: betas must be a pair (beta1, beta2), got {betas!r}")
    if len(clip) != 2:
        raise ValueError(f"cw_l2_step: clip must be a pair (min, max), got {clip!r}")
    return torch.ops.robustkit.cw_l2_step_(w, x, exp_avg, exp_avg_sq, best_adv, best_l2sq, x_orig, loss_grad,
                                           success, step, float(lr), float(betas[0]), float(betas[1]), float(adam_eps),
                                           float(clip[0]), float(clip[1]))


def _fake(w, x, exp_avg, exp_avg_sq, best_adv, best_l2sq, x_orig, loss_grad, success, step, lr, beta1, beta2,
          adam_eps, clip_min, clip_max):
    torch._check(x_orig.shape == w.shape, lambda: "cw_l2_step: x_orig and w must have the same shape")
    torch._check(loss_grad.shape == w.shape, lambda: "cw_l2_step: loss_grad and w must have the same shape")
    return w.new_empty((w.shape[0],))


if _ext.has_ops():  # the schema exists only when the extension is built
    torch.library.register_fake("robustkit::cw_l2_step_")(_fake)
