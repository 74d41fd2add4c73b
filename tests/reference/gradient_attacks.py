"""Naive sign-gradient attacks written from the papers' update rules with plain torch ops.

Independent of robustkit's fused ops: the loss is ``F.cross_entropy``, the steps are ``sign``/``clamp``.
Every function returns the list of iterates ``[x_0, x_1, ..., x_N]`` so tests can also check early stop.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fused_loss(models: Sequence[nn.Module], x: Tensor, label: Tensor, *, temperature: float = 1.0,
               soft_weight: float = 1.0, hard_weight: float = 0.0, fusion: str = "loss",
               weights: Optional[Sequence[float]] = None) -> Tensor:
    """Eq. 8 of the self-distillation attack (``fusion="loss"``) or CE of Dong et al.'s weighted mean logits."""
    logits = [m(x) for m in models]
    if fusion == "logits":
        w = [1.0 / len(models)] * len(models) if weights is None else list(weights)
        logits = [sum(wk * z for wk, z in zip(w, logits))]
    total = 0.0
    for z in logits:
        total = total + soft_weight * F.cross_entropy(z / temperature, label, reduction="sum")
        total = total + hard_weight * F.cross_entropy(z, label, reduction="sum")
    return total


def _ascent_direction(models, x_i, label, targeted, loss_kwargs) -> Tensor:
    x_var = x_i.clone().requires_grad_(True)
    loss = fused_loss(models, x_var, label, **loss_kwargs)
    (grad,) = torch.autograd.grad(loss, x_var)
    return -grad if targeted else grad


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """[B] -> [B, 1, 1, ...] broadcastable against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def _iterates(models, x: Tensor, y: Tensor, steps: int, target: Optional[Tensor], start: Optional[Tensor],
              loss_kwargs: dict, update) -> List[Tensor]:
    """``[x_0, ..., x_steps]`` with ``x_{i+1} = update(x_i, ascent direction at x_i)``, from ``start`` or x."""
    label = y if target is None else target
    x_i = x.clone() if start is None else start.clone()
    out = [x_i]
    for _ in range(steps):
        x_i = update(x_i, _ascent_direction(models, x_i, label, target is not None, loss_kwargs))
        out.append(x_i)
    return out


def _linf_project(x_i: Tensor, x: Tensor, eps: float) -> Tensor:
    return torch.min(torch.max(x_i, x - eps), x + eps).clamp(0, 1)


def iterative_sign(models, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int,
                   target: Optional[Tensor] = None, start: Optional[Tensor] = None, **loss_kwargs) -> List[Tensor]:
    """I-FGSM (Kurakin et al.) / L-inf PGD (Madry et al.); FGSM is steps=1, step_size=eps."""
    def update(x_i, direction):
        return _linf_project(x_i + step_size * direction.sign(), x, eps)

    return _iterates(models, x, y, steps, target, start, loss_kwargs, update)


def pgd_l2(models, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int,
           target: Optional[Tensor] = None, start: Optional[Tensor] = None, **loss_kwargs) -> List[Tensor]:
    """L2 PGD: a normalised gradient step, projection onto the eps-ball, then the [0, 1] box."""
    def update(x_i, direction):
        norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = x_i + step_size * direction / _per_sample(norm, x) - x
        delta_norm = delta.flatten(1).norm(dim=1)
        factor = torch.where(delta_norm > eps, eps / delta_norm, torch.ones_like(delta_norm))
        return (x + delta * _per_sample(factor, x)).clamp(0, 1)

    return _iterates(models, x, y, steps, target, start, loss_kwargs, update)


def mifgsm(models, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int, decay: float = 1.0,
           target: Optional[Tensor] = None, **loss_kwargs) -> List[Tensor]:
    """MI-FGSM (Dong et al. 2018, Eq. 6-7) and Algorithm 1 of the self-distillation attack."""
    g = [torch.zeros_like(x)]  # the momentum buffer, carried between updates

    def update(x_i, direction):
        l1 = direction.abs().flatten(1).sum(dim=1).clamp_min(1e-12)
        g[0] = decay * g[0] + direction / _per_sample(l1, x)
        return _linf_project(x_i + step_size * g[0].sign(), x, eps)

    return _iterates(models, x, y, steps, target, None, loss_kwargs, update)


def first_success(models, iterates: List[Tensor], y: Tensor, target: Optional[Tensor]):
    """Per sample: whether any iterate succeeds, the first successful iterate (else the last), its index."""
    with torch.no_grad():
        hits = []
        for x_i in iterates:
            z = torch.stack([m(x_i) for m in models]).mean(0)
            pred = z.argmax(1)
            hits.append(pred == target if target is not None else pred != y)
    hits = torch.stack(hits)  # [N + 1, B]
    any_hit = hits.any(0)
    first = torch.where(any_hit, hits.float().argmax(0), torch.full_like(y, len(iterates) - 1))
    stacked = torch.stack(iterates)  # [N + 1, B, ...]
    chosen = stacked[first, torch.arange(y.shape[0])]
    steps = torch.where(any_hit, first, torch.full_like(y, len(iterates) - 1))
    return any_hit, chosen, steps
