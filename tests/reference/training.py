"""Naive training objectives written from the papers' formulas, for float64 comparison with
robustkit.defenses.adversarial_training.

Independent of robustkit: cross-entropy and KL are spelled out with exp/log/sum, the inner maximisations are
plain autograd on the written-out loss followed by sign, clamp and min/max projections. The caller passes
the random draws (the start noise), so the functions themselves are deterministic.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """mean_i -log softmax(z_i)[y_i], with the log-sum-exp written out (stabilised by the row max)."""
    shift = logits.max(dim=1, keepdim=True).values
    log_normaliser = shift.squeeze(1) + torch.log(torch.exp(logits - shift).sum(dim=1))
    return (log_normaliser - logits.gather(1, y[:, None]).squeeze(1)).mean()


def softmax(logits: Tensor) -> Tensor:
    e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def kl_rows(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """[B] KL(softmax(p) || softmax(q)) per row: sum_j p_j (log p_j - log q_j)."""
    p, q = softmax(p_logits), softmax(q_logits)
    return (p * (torch.log(p) - torch.log(q))).sum(dim=1)


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Onto {||x' - x||_inf <= eps} and then the [0, 1] box, coordinate by coordinate."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def pgd_linf(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
             start_noise: Tensor) -> Tensor:
    """Madry et al.'s PGD on the CE loss from x + start_noise (clipped to the box), model in eval mode."""
    x_adv = (x + start_noise).clamp(0.0, 1.0)
    for _ in range(steps):
        x_var = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(cross_entropy(model(x_var), y) * x.shape[0], x_var)
        x_adv = project_linf(x_adv + step_size * grad.sign(), x, eps).detach()
    return x_adv


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Goodfellow et al.'s x + eps * sign(grad_x J), clipped to [0, 1]."""
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cross_entropy(model(x_var), y), x_var)
    return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()


def mixed_objective(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, alpha: float) -> Tensor:
    """alpha * J(x) + (1 - alpha) * J(x_adv): Goodfellow et al. Eq. 6 (alpha = 0.5), Madry et al. at alpha = 0."""
    return alpha * cross_entropy(model(x), y) + (1 - alpha) * cross_entropy(model(x_adv), y)


def fast_fgsm_example(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, start: Tensor) -> Tensor:
    """Wong et al. Algorithm 3's inner step: delta = start ~ U(-eps, eps) (not clipped to the box, as in the
    algorithm and their MNIST code), one signed step of alpha on delta, clamp delta to [-eps, eps], x + delta
    clamped to the box."""
    delta = start.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cross_entropy(model(x + delta), y), delta)
    delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0).detach()


def trades_example(model: nn.Module, x: Tensor, eps: float, step_size: float, steps: int,
                   gaussian: Tensor, start_std: float) -> Tensor:
    """TRADES' inner maximisation of sum_i KL(p(x_i) || p(x'_i)) by signed steps from x + start_std * N(0, I)."""
    with torch.no_grad():
        natural = model(x)
    x_adv = (x + start_std * gaussian).clamp(0.0, 1.0)
    for _ in range(steps):
        x_var = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(kl_rows(natural, model(x_var)).sum(), x_var)
        x_adv = project_linf(x_adv + step_size * grad.sign(), x, eps).detach()
    return x_adv


def trades_objective(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """Zhang et al. Eq. 5: CE(f(x), y) + beta * mean_i KL(p(x_i) || p(x'_i)), gradient through both terms."""
    natural = model(x)
    return cross_entropy(natural, y) + beta * kl_rows(natural, model(x_adv)).mean()


def free_training(model: nn.Module, batches: List[tuple], eps: float, step_size: float, replays: int,
                  lr: float) -> Tensor:
    """Shafahi et al. Algorithm 1 with plain SGD (no momentum): delta = 0 once; per batch, m times: one backward
    of J(x + delta) gives g_theta and g_delta; theta -= lr * g_theta; delta = clip(delta + eps * sign(g_delta)).
    Updates ``model`` in place and returns the final delta."""
    delta = torch.zeros_like(batches[0][0])
    params = [p for p in model.parameters()]
    for x, y in batches:
        for _ in range(replays):
            d = delta[:x.shape[0]].clone().requires_grad_(True)
            loss = cross_entropy(model((x + d).clamp(0.0, 1.0)), y)
            grads = torch.autograd.grad(loss, params + [d])
            with torch.no_grad():
                for p, g in zip(params, grads[:-1]):
                    p -= lr * g
                delta[:x.shape[0]] = (d + step_size * grads[-1].sign()).clamp(-eps, eps)
    return delta
