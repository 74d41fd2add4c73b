"""Naive implementations of the input-side defenses, written from the papers with per-image loops."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_pad_loop(x, out_size, h, w, top, left, pad_value=0.0):
    """Xie et al.'s layer, one image at a time: F.interpolate to (h, w), then pad to out_size."""
    out_h, out_w = out_size
    canvas = torch.full((x.shape[0], x.shape[1], out_h, out_w), pad_value, dtype=x.dtype)
    for i in range(x.shape[0]):
        r = F.interpolate(x[i:i + 1], size=(int(h[i]), int(w[i])), mode="bilinear", align_corners=False)
        t, l = int(top[i]), int(left[i])
        canvas[i, :, t:t + int(h[i]), l:l + int(w[i])] = r[0]
    return canvas


def score_ensemble_seed(member_logits):
    """Defendr Sec. 4.4: normalise each model's scores (softmax) so each row sums to 1, add them up."""
    total = 0
    for z in member_logits:
        p = torch.exp(z.double())
        p = p / p.sum(dim=1, keepdim=True)
        total = total + p
    return total


def hgd_loss_loop(f_denoised, f_clean):
    """HGD's loss ||f_l(x_hat) - f_l(x)||_1, averaged over the batch, one sample at a time."""
    total = 0.0
    for a, b in zip(f_denoised, f_clean):
        total = total + (a.double() - b.double()).abs().sum()
    return total / len(f_denoised)
