"""Naive float64 implementations of the logit-pairing losses, the distillation losses and the Parseval retraction,
written from the papers' formulas with explicit per-sample / per-pair / per-row loops, independently of
robustkit/defenses/."""
from __future__ import annotations

import math

import torch


def _log_softmax(v):
    """Textbook log softmax of one vector (differentiable), shifted by its max so float64 cannot overflow."""
    shift = v.max().detach()
    total = sum(torch.exp(t - shift) for t in v)
    return torch.stack([t - shift - torch.log(total) for t in v])


def _cross_entropy(z, label, temperature=1.0):
    return -_log_softmax(z / temperature)[int(label)]


def _sq_dist(a, b):
    return sum((a[c] - b[c]) ** 2 for c in range(a.shape[0]))


def naive_logit_pairing(clean_logits, adv_logits, y, *, adversarial, clean, squeeze, clean_weight, pairs):
    """Kannan et al.'s objective as the Defendr seed writes it (Sec. 4.2.2), a float64 scalar:

    J = w CE(f(x)) + (1 − w) CE(f(x̃))             (only CE(f(x)) without adversarial logits)
        + λ_alp (1/m) Σ_i L(f(x_i), f(x̃_i))
        + λ_clp (2/m) Σ_{i<m/2} L(f(x_a(i)), f(x_b(i)))   over the given pairs (a(i), b(i))
        + λ_sq (1/m) Σ_i ||f(x_i)||²
    with L the squared L2 distance.
    Differentiable (float64 torch scalars), so its gradient is the reference gradient too.
    """
    m = clean_logits.shape[0]
    z = clean_logits
    ce_clean = sum(_cross_entropy(z[i], y[i]) for i in range(m)) / m
    if adv_logits is None:
        total = ce_clean
    else:
        za = adv_logits
        ce_adv = sum(_cross_entropy(za[i], y[i]) for i in range(m)) / m
        total = clean_weight * ce_clean + (1 - clean_weight) * ce_adv
        total = total + adversarial * sum(_sq_dist(z[i], za[i]) for i in range(m)) / m
    first, second = pairs
    if clean > 0 and len(first):
        half = len(first)                       # m/2 pairs; the seed's 2/m factor is 1/half
        total = total + clean * 2 / (2 * half) * sum(_sq_dist(z[a], z[b])
                                                     for a, b in zip(first.tolist(), second.tolist()))
    if squeeze > 0:
        total = total + squeeze * sum(_sq_dist(z[i], torch.zeros_like(z[i])) for i in range(m)) / m
    return total


def naive_soft_cross_entropy(student_logits, teacher_logits, temperature):
    """Papernot et al.'s distillation loss: mean_i −Σ_c F_T(teacher)_c log F_T(student)_c, with
    F_T(z) = softmax(z / T)."""
    m = student_logits.shape[0]
    total = 0.0
    for i in range(m):
        p = torch.exp(_log_softmax(teacher_logits[i] / temperature))
        log_q = _log_softmax(student_logits[i] / temperature)
        total = total - sum(p[c] * log_q[c] for c in range(len(p)))
    return total / m


def naive_temperature_ce(logits, y, temperature):
    """The teacher's loss: mean_i CE(softmax(z_i / T), y_i)."""
    return sum(_cross_entropy(logits[i], y[i], temperature) for i in range(logits.shape[0])) / logits.shape[0]


def naive_parseval_step(w, rows, beta):
    """Cisse et al. Eq. (4) on the sampled rows S of the [out, rest] matrix w, entry by entry:
    W_S <- (1 + β) W_S − β W_S W_Sᵀ W_S; the other rows are unchanged."""
    w = w.double().clone()
    ws = w[rows].clone()
    k, n = ws.shape
    gram = [[sum(float(ws[a, t]) * float(ws[b, t]) for t in range(n)) for b in range(k)] for a in range(k)]
    new = ws.clone()
    for a in range(k):
        for j in range(n):
            new[a, j] = (1 + beta) * float(ws[a, j]) - beta * sum(gram[a][b] * float(ws[b, j]) for b in range(k))
    w[rows] = new
    return w


def naive_tightness(w):
    """||W Wᵀ − I||_F of the [out, rest] matrix w."""
    w = w.double()
    out = w.shape[0]
    return math.sqrt(sum((float(w[a] @ w[b]) - (1.0 if a == b else 0.0)) ** 2 for a in range(out) for b in range(out)))
