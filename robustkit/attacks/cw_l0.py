"""Carlini-Wagner L0 (Carlini & Wagner 2017, Sec. V.C), batched per sample.

Run the L2 attack on the pixels still allowed to change; while it succeeds, freeze the pixels whose
``|x'_i - x_i| |grad_i|`` is smallest (at least one, at most ``0.3 sqrt(changed pixels)``, stopping at the
first with a change-weighted gradient above 0.01) and repeat; return the last success. Every sample runs its
own pixel set inside one batch; finished samples leave it.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from robustkit.attacks.cw_common import CWSettings, LogitsFn, margin_loss
from robustkit.attacks.cw_l2 import l2_search


def changed_pixels(adv: Tensor, x: Tensor) -> Tensor:
    """``[B]`` the L0 distance: pixels (any channel) that differ by more than 1e-4, as a float count."""
    changed = (adv - x).abs() > 1e-4
    return (changed.flatten(2).any(dim=1) if x.dim() >= 3 else changed.flatten(1)).sum(dim=1).to(x.dtype)


def l0_attack(logits: LogitsFn, x: Tensor, y: Tensor, target: Optional[Tensor],
              s: CWSettings, start: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns ``(adv, steps, best_l0)``: each sample's last successful iterate (``x`` where none), the Adam
    iterations it used over all L2 searches, and the number of pixels it changes (``inf`` where none was
    found). ``start`` is where the first L2 search starts (the later ones, on fewer pixels, start from
    ``x``: frozen pixels must hold their clean value)."""
    batch = x.shape[0]
    # Pixels are frozen across channels, as in the paper: the mask is [B, 1, H, W] broadcast over C.
    pixel_shape = (batch, 1) + tuple(x.shape[2:]) if x.dim() >= 3 else x.shape
    allowed = torch.ones(pixel_shape, dtype=torch.bool, device=x.device)
    result = x.clone()
    found = torch.zeros(batch, dtype=torch.bool, device=x.device)
    steps_used = torch.zeros(batch, dtype=torch.int64, device=x.device)
    active = torch.arange(batch, device=x.device)
    while active.numel() > 0:
        x_a, y_a = x[active], y[active]
        t_a = None if target is None else target[active]
        mask = allowed[active].expand_as(x_a).contiguous()
        adv, l2sq, _, steps = l2_search(logits, x_a, y_a, t_a, s, mask=mask, start=start)
        start = None
        steps_used[active] += steps
        success = torch.isfinite(l2sq)
        result[active] = torch.where(success.view((-1,) + (1,) * (x.dim() - 1)), adv, result[active])
        found[active] |= success
        # importance of each still-allowed pixel: |change| x |gradient of the margin loss|, summed over channels
        adv_req = adv.detach().requires_grad_(True)
        f, _ = margin_loss(logits(adv_req), t_a if t_a is not None else y_a, t_a is not None,
                           s.confidence)
        (grad,) = torch.autograd.grad(f.sum(), adv_req)
        change = ((adv - x_a).abs() * grad.abs()).sum(dim=1, keepdim=True) if x.dim() >= 3 else \
            (adv - x_a).abs() * grad.abs()
        still = allowed[active]
        changed = (adv - x_a).abs().amax(dim=1, keepdim=True) > 1e-4 if x.dim() >= 3 else (adv - x_a).abs() > 1e-4
        score = torch.where(still, change, torch.full_like(change, math.inf)).flatten(1)  # [Ba, P]
        order = score.argsort(dim=1)
        sorted_score = score.gather(1, order)
        limit = (0.3 * changed.flatten(1).sum(dim=1).float().sqrt()).ceil().clamp_min(1)  # [Ba]
        rank = torch.arange(score.shape[1], device=x.device).unsqueeze(0)
        # freeze in order of importance: up to `limit`, through the first pixel that mattered (> 0.01)
        mattered = (sorted_score > 0.01).float().cumsum(dim=1)
        first_big = torch.where(mattered.sum(dim=1) > 0, (mattered == 0).sum(dim=1), score.shape[1])
        count = torch.minimum(limit.long(), first_big + 1)
        freeze_sorted = (rank < count.unsqueeze(1)) & torch.isfinite(sorted_score)
        freeze = torch.zeros_like(freeze_sorted).scatter(1, order, freeze_sorted)
        new_allowed = still.flatten(1) & ~freeze
        new_allowed = torch.where(success.unsqueeze(1), new_allowed, still.flatten(1))
        allowed[active] = new_allowed.view_as(still)
        keep = (success & new_allowed.any(dim=1)).nonzero().squeeze(1)
        active = active[keep]
    best_l0 = torch.where(found, changed_pixels(result, x), x.new_full((batch,), math.inf))
    return result, steps_used, best_l0


__all__ = ["l0_attack"]
