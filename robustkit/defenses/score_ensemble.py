"""Defendr's normalised-score ensemble (the seed's Sec. 4.4): each member's class scores are normalised to
sum to one per image, the normalised scores are added, and the class with the highest sum wins.

With softmax as the normalisation, the sum is ``K`` times the mean of the members' probabilities. The module
returns the *log* of that mean, so that its argmax is the seed's prediction and cross-entropy attacks
(``-log p_y``) apply to it unchanged.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn


class ScoreEnsemble(nn.Module):
    """``log(mean_k softmax(f_k(x)))`` (``combine="softmax-mean"``) or ``mean_k f_k(x)``
    (``combine="logit-mean"``, the plain logit average)."""

    COMBINES = ("softmax-mean", "logit-mean")

    def __init__(self, models: Sequence[nn.Module], combine: str = "softmax-mean"):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("ScoreEnsemble: models must name at least one model")
        if combine not in self.COMBINES:
            raise ValueError(f"ScoreEnsemble: combine must be one of {self.COMBINES}, got {combine!r}")
        self.members = nn.ModuleList(models)
        self.combine = combine

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}"

    def forward(self, x: Tensor) -> Tensor:
        outs = [m(x) for m in self.members]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) != 1:
            raise ValueError(f"ScoreEnsemble: members return different shapes {sorted(shapes)}")
        stacked = torch.stack(outs)                                    # [K, B, C]
        if self.combine == "logit-mean":
            return stacked.mean(0)
        # log of the mean probability, computed stably in log space
        return torch.logsumexp(torch.log_softmax(stacked, dim=-1), dim=0) - math.log(len(outs))
