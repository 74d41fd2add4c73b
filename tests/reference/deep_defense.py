"""Deep Defense's regulariser written from the seed's Eq. 1-6, one sample and one candidate at a time with
plain autograd (no fused op, no batching): the independent reference for robustkit.defenses.DeepDefense."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def deepfool_sample(model, x, steps, overshoot, candidates, norm="l2"):
    """DeepFool's perturbation of one image ``x`` ``[1, ...]`` against the model's current prediction,
    differentiable in the weights (create_graph). Eq. 2 with the reference code's 1e-4 push."""
    z0 = model(x)[0]
    pred = int(z0.argmax())
    order = [int(k) for k in z0.detach().argsort(descending=True) if int(k) != pred]
    count = len(order) + 1 if candidates is None else min(candidates, len(order) + 1)
    classes = order[:count - 1]
    r_total = torch.zeros_like(x).flatten()
    for i in range(steps):
        xi = x.detach() + (1 + overshoot) * r_total.view_as(x) if i else x.detach().requires_grad_(True)
        if not i:
            xi.requires_grad_(True)
        z = model(xi)[0]
        if int(z.argmax()) != pred:
            break
        best, best_score = None, None
        for k in classes:
            fk = z[k] - z[pred]
            (wk,) = torch.autograd.grad(fk, xi, create_graph=True)
            wk = wk.flatten()
            dual = wk.norm(p=2) if norm == "l2" else wk.abs().sum()
            score = fk.abs().detach() / dual.detach().clamp_min(1e-12)
            if best_score is None or score < best_score:
                best, best_score = (fk, wk), score
        fk, wk = best
        if norm == "l2":
            r = (fk.abs() + 1e-4) / (wk * wk).sum().clamp_min(1e-24) * wk
        else:
            r = (fk.abs() + 1e-4) / wk.abs().sum().clamp_min(1e-12) * torch.sign(wk)
        r_total = r_total + r
    return (1 + overshoot) * r_total.view_as(x)


def deep_defense_loss(model, x, y, lam, c, d, steps, overshoot, candidates, norm="l2"):
    """CE + lam * mean_k R(...) of Eq. 6 with R = exp, looping over the samples."""
    ce = F.cross_entropy(model(x), y)
    p = 2 if norm == "l2" else float("inf")
    terms = []
    for k in range(x.shape[0]):
        xk = x[k:k + 1]
        dx = deepfool_sample(model, xk, steps, overshoot, candidates, norm)
        rho = dx.flatten().norm(p=p) / xk.flatten().norm(p=p)
        correct = int(model(xk).argmax()) == int(y[k])
        terms.append(torch.exp(-c * rho) if correct else torch.exp(d * rho))
    return ce + lam * torch.stack(terms).mean()
