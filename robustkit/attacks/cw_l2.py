"""Carlini-Wagner L2 (Carlini & Wagner 2017, Sec. V.A), batched: the attack and its per-sample binary search.

Minimise ``||x' - x||_2^2 + c f(x')`` over ``w`` with ``x' = (tanh(w) + 1) / 2`` (the box holds by
construction), Adam in w-space, and a per-sample binary search over ``c`` that keeps the smallest successful
perturbation per sample. Every step is one forward, one backward to the input and one fused
:func:`robustkit.ops.cw_l2_step` (best-so-far tracking, the L2 term and its gradient, the tanh chain rule,
Adam). Early abort is decided per sample: a sample whose own loss has not dropped by ``abort_tol`` (Carlini's
0.01 %) since the last check (every ``steps / abort_checks`` iterations, Carlini's ``steps // 10``) leaves the
active batch. The whole search is batched; the only host synchronisations are those checks.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from robustkit.attacks.cw_common import CWSettings, LogitsFn, from_w, margin_loss, to_w
from robustkit.ops import cw_l2_step

# Carlini's "no successful c yet" upper bound: the search multiplies c by 10 until one succeeds.
_NO_UPPER = 1e10


def l2_search(logits: LogitsFn, x: Tensor, y: Tensor, target: Optional[Tensor], s: CWSettings,
              mask: Optional[Tensor] = None, start: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The L2 attack with its binary search; ``mask`` (bool, ``x``'s shape, True = may change) restricts
    the pixels that move, for the L0 attack; ``start`` (default ``x``) is where each round's Adam starts
    (Carlini and Wagner's random starting points, Sec. V.A; distances are still measured from ``x``).
    Returns ``(adv, best_l2sq, const, steps)``; ``adv`` is ``x`` and ``best_l2sq`` ``inf`` where no
    adversarial example was found; ``steps`` counts the Adam iterations each sample ran over all rounds."""
    x = x.contiguous()  # the fused step updates its state in place and needs dense samples
    batch = x.shape[0]
    label = target if target is not None else y
    const = torch.full((batch,), s.initial_const, dtype=x.dtype, device=x.device)
    lower = torch.zeros_like(const)
    upper = torch.full_like(const, _NO_UPPER)
    best_adv = x.clone()
    best_l2sq = torch.full_like(const, math.inf)
    best_const = torch.full_like(const, math.nan)
    steps = torch.zeros(batch, dtype=torch.int64, device=x.device)
    w_start = to_w(x if start is None else start)
    for round_index in range(s.binary_search_steps):
        if s.binary_search_steps >= 10 and round_index == s.binary_search_steps - 1:
            const = torch.where(upper < _NO_UPPER, upper, const)
        found, l2sq_before = _l2_round(logits, s, x, label, target is not None, const, w_start, best_adv,
                                       best_l2sq, steps, mask)
        best_const = torch.where(best_l2sq < l2sq_before, const, best_const)
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(upper < _NO_UPPER, (lower + upper) / 2, const * 10)
    return best_adv, best_l2sq, best_const, steps


def _l2_round(logits: LogitsFn, s: CWSettings, x: Tensor, label: Tensor, targeted: bool, const: Tensor,
              w_start: Tensor, best_adv: Tensor, best_l2sq: Tensor, steps: Tensor,
              mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """One round of Adam at fixed c for all samples; updates ``best_adv``, ``best_l2sq`` and ``steps`` in
    place and returns ``(found [B], best_l2sq before the round)``."""
    batch = x.shape[0]
    l2sq_before = best_l2sq.clone()
    found = torch.zeros(batch, dtype=torch.bool, device=x.device)
    active = torch.arange(batch, device=x.device)
    w = w_start.clone()
    if s.warm_start:
        # Start from the best adversarial example so far. Pixels the L0 attack froze hold their start
        # value in every iterate, so in best_adv too: they stay frozen.
        found_before = best_l2sq.isfinite().view((-1,) + (1,) * (x.dim() - 1))
        w = torch.where(found_before, to_w(best_adv), w)
    x_cur = from_w(w)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    b_adv, b_l2sq = best_adv.clone(), best_l2sq.clone()
    x0, c, lab, w0 = x, const, label, w_start
    keep_mask = mask
    prev_loss = torch.full_like(const, math.inf)
    check_every = max(1, math.ceil(s.steps / s.abort_checks))
    for it in range(s.steps):
        x_req = x_cur.detach().requires_grad_(True)
        f, success = margin_loss(logits(x_req), lab, targeted, s.confidence)
        (loss_grad,) = torch.autograd.grad((c * f).sum(), x_req)
        l2sq = cw_l2_step(w, x_cur, m, v, b_adv, b_l2sq, x0, loss_grad, success, step=it + 1, lr=s.lr)
        if keep_mask is not None:
            # Frozen pixels (L0) go back to the start: their Adam state would otherwise chase the
            # 1e-6 gap between x(w_start) and x.
            for state, start in ((w, w0), (x_cur, x0), (m, 0.0), (v, 0.0)):
                state.copy_(torch.where(keep_mask, state, start))
        found[active] |= success
        steps[active] += 1
        if not s.abort_early or it % check_every != 0 or it == s.steps - 1:
            continue
        loss = l2sq + c * f.detach()
        stalled = loss > (1 - s.abort_tol) * prev_loss
        prev_loss = loss
        if bool(stalled.any()):
            best_adv[active], best_l2sq[active] = b_adv, b_l2sq
            keep = (~stalled).nonzero().squeeze(1)
            if keep.numel() == 0:
                return found, l2sq_before
            active = active[keep]
            w, x_cur, m, v = w[keep], x_cur[keep], m[keep], v[keep]
            b_adv, b_l2sq, x0, c, lab, w0 = b_adv[keep], b_l2sq[keep], x0[keep], c[keep], lab[keep], w0[keep]
            prev_loss = prev_loss[keep]
            keep_mask = None if keep_mask is None else keep_mask[keep]
    best_adv[active], best_l2sq[active] = b_adv, b_l2sq
    return found, l2sq_before


__all__ = ["l2_search"]
