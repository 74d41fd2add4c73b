"""Expectation over transformation (Athalye, Carlini and Wagner 2018, Sec. 4): for a randomized model, the
attack follows the gradient of the *expected* loss, estimated by averaging the gradient over ``eot``
stochastic forward passes at the same point.

The ``eot`` copies of the batch go through the model as one batch of ``eot * B`` rows (in slices of at most
``max_rows`` rows where memory is tight), so a model that draws its randomness per row (random resizing and
padding, dropout, noise) sees ``eot`` independent draws per image in one forward. A model that draws one
random transformation per *call* for the whole batch needs ``eot_batched=False``: then each copy is its own
forward.

Minimal-norm attacks (DeepFool, C&W) take their draws from :func:`logit_draws`: the ``[eot, B, C]`` logits of
the copies with the graph kept, from which they form the expected logits (DeepFool's linearisation) or the
expected loss (C&W's margin), so that every backward through them is the average of the copies' gradients.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

LogitsFn = Callable[[Tensor], Tensor]
LossGradFn = Callable[[Tensor, Tensor, Optional[Tensor]], Tuple[Tensor, Tensor]]


def check_eot(name: str, eot) -> int:
    if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
        raise ValueError(f"{name}: eot must be an int >= 1 (the number of stochastic forwards averaged), got {eot!r}")
    return eot


def _repeat_rows(t: Tensor, copies: int) -> Tensor:
    return t if copies == 1 else t.repeat(copies, *([1] * (t.dim() - 1)))


def logit_draws(logits_fn: LogitsFn, x: Tensor, eot: int, *, batched: bool = True) -> Tensor:
    """``[eot, B, C]``: the logits of ``eot`` stochastic forwards at ``x``, graph kept, so that the gradient of
    their mean is the mean of the draws' gradients. ``batched``: one forward of ``eot * B`` rows (copy-major);
    else ``eot`` forwards of ``B`` rows, for models that draw one transformation per call."""
    if eot == 1:
        return logits_fn(x).unsqueeze(0)
    if batched:
        return logits_fn(_repeat_rows(x, eot)).view(eot, x.shape[0], -1)
    return torch.stack([logits_fn(x) for _ in range(eot)])


def eot_loss_and_grad(logits_fn: LogitsFn, x_adv: Tensor, loss_grad_fn: LossGradFn, y: Tensor,
                      target: Optional[Tensor], *, eot: int = 1, batched: bool = True,
                      max_rows: Optional[int] = None,
                      need_grad: bool = True) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """``(loss [B], grad [B, ...], logits [B, C])`` at ``x_adv``, each the mean over ``eot`` forwards.

    ``loss_grad_fn(logits, y, target) -> (loss [N], dloss/dlogits [N, C])`` is the per-sample loss. The input
    gradient comes from one backward through the model per forward, seeded with the closed-form logit gradient.
    ``need_grad=False`` skips the backward (the last iterate of an attack) and returns ``grad=None``.
    """
    batch = x_adv.shape[0]
    if batched:
        per_call = eot if max_rows is None else max(1, min(eot, max_rows // max(batch, 1)))
    else:
        per_call = 1
    loss_sum: Optional[Tensor] = None
    logits_sum: Optional[Tensor] = None
    grad_sum: Optional[Tensor] = None
    done = 0
    while done < eot:
        copies = min(per_call, eot - done)
        done += copies
        x_var = x_adv.detach().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            logits = logits_fn(_repeat_rows(x_var, copies))  # [copies * B, C]
        labels = _repeat_rows(y, copies)
        targets = None if target is None else _repeat_rows(target, copies)
        loss, logit_grad = loss_grad_fn(logits.detach(), labels, targets)
        if need_grad:
            # the repeat's backward sums the copies' gradients into x_var's
            (grad,) = torch.autograd.grad(logits, x_var, grad_outputs=logit_grad)
            grad_sum = grad if grad_sum is None else grad_sum.add_(grad)
        loss_b = loss.view(copies, batch).sum(0)
        logits_b = logits.detach().view(copies, batch, -1).sum(0)
        loss_sum = loss_b if loss_sum is None else loss_sum.add_(loss_b)
        logits_sum = logits_b if logits_sum is None else logits_sum.add_(logits_b)
    assert loss_sum is not None and logits_sum is not None
    if eot == 1:
        return loss_sum, grad_sum, logits_sum
    scale = 1.0 / eot
    return loss_sum.mul_(scale), None if grad_sum is None else grad_sum.mul_(scale), logits_sum.mul_(scale)
