"""Per-sample attack losses with their logit gradients in closed form: cross-entropy and the Difference of
Logits Ratio (DLR) of Croce and Hein 2020 ("Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", Eq. 5 and the targeted variant of Sec. 5).

With the logits ``z`` sorted in decreasing order as ``z_π1 >= z_π2 >= ...``::

    DLR(z, y)         = -(z_y - max_{i != y} z_i) / (z_π1 - z_π3 + 1e-12)
    targeted DLR(z,y,t) = -(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2 + 1e-12)

Both are invariant to shifting and to (positive) rescaling of the logits, which is what makes APGD-DLR see
through models whose cross-entropy saturates. The attack *ascends* them. Each function returns
``(loss [N], dloss/dlogits [N, C])``, so the attack can backpropagate once through the model without an
autograd node for the loss; ``tests/attacks/test_apgd.py`` checks the gradients against autograd in float64.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

LOSSES = ("ce", "dlr")
_DLR_FLOOR = 1e-12


def check_classes(name: str, loss: str, num_classes: int, targeted: bool) -> None:
    """DLR needs the third-largest logit (the fourth for the targeted form): fail early with the reason."""
    if loss != "dlr":
        return
    needed = 4 if targeted else 3
    if num_classes < needed:
        kind = "targeted DLR" if targeted else "DLR"
        raise ValueError(f"{name}: loss='dlr' ({kind}) needs a model with at least {needed} classes, "
                         f"got {num_classes}; use loss='ce'")


def check_label_range(name: str, num_classes: int, y: Tensor, target: Optional[Tensor]) -> None:
    """Raises naming ``y`` (untargeted) or ``target`` when a class is ``>= num_classes`` (the models' output)."""
    label, what = (y, "y") if target is None else (target, "target")
    if label.numel() and int(label.max()) >= num_classes:
        raise ValueError(f"{name}: {what} must hold classes < {num_classes} (the models' output size), "
                         f"got {int(label.max())}")


def ce_loss_and_grad(logits: Tensor, label: Tensor) -> Tuple[Tensor, Tensor]:
    """``CE(z, label)`` per sample and its gradient ``softmax(z) - onehot(label)``."""
    log_probs = torch.log_softmax(logits, dim=1)
    loss = -log_probs.gather(1, label.unsqueeze(1)).squeeze(1)
    grad = log_probs.exp_()
    grad.scatter_add_(1, label.unsqueeze(1), torch.full_like(loss, -1.0).unsqueeze(1))
    return loss, grad


def _scaled_margin_loss_and_grad(logits: Tensor, y: Tensor, other: Tensor, scale_indices: Tensor,
                                 scale_weights: Tensor) -> Tuple[Tensor, Tensor]:
    """``-(z_y - z_other) / s`` per sample, with ``s = sum_k w_k z_{i_k} + floor`` over the sorted logits
    ``scale_indices`` weighted by ``scale_weights``, and its exact gradient with respect to the logits. Both DLR
    losses are this ratio; they differ only in the other class and in which sorted logits form ``s``."""
    z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    z_other = logits.gather(1, other.unsqueeze(1)).squeeze(1)
    margin = z_y - z_other
    scale = (logits.gather(1, scale_indices) * scale_weights).sum(1) + _DLR_FLOOR
    loss = -margin / scale
    inv = 1.0 / scale
    ratio = margin * inv * inv  # d loss / d s
    grad = torch.zeros_like(logits)
    grad.scatter_add_(1, y.unsqueeze(1), (-inv).unsqueeze(1))
    grad.scatter_add_(1, other.unsqueeze(1), inv.unsqueeze(1))
    grad.scatter_add_(1, scale_indices, ratio.unsqueeze(1) * scale_weights)
    return loss, grad


def dlr_loss_and_grad(logits: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """Untargeted DLR per sample (to be maximised) and its gradient with respect to the logits:
    ``-(z_y - max_{i != y} z_i) / (z_(1) - z_(3))``."""
    top3 = logits.topk(3, dim=1).indices
    # the largest logit other than y: the runner-up when y is on top
    other = torch.where(top3[:, 0] == y, top3[:, 1], top3[:, 0])
    weights = logits.new_tensor([1.0, -1.0])
    return _scaled_margin_loss_and_grad(logits, y, other, top3[:, [0, 2]], weights)


def targeted_dlr_loss_and_grad(logits: Tensor, y: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """Targeted DLR per sample (to be maximised: it grows as ``z_t`` overtakes ``z_y``) and its gradient:
    ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)``."""
    top4 = logits.topk(4, dim=1).indices
    weights = logits.new_tensor([1.0, -0.5, -0.5])
    return _scaled_margin_loss_and_grad(logits, y, target, top4[:, [0, 2, 3]], weights)


def attack_loss_and_grad(loss: str, logits: Tensor, y: Tensor, target: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """The loss the attack ascends, per sample, and its logit gradient.

    ``ce``: untargeted ``CE(z, y)``; targeted ``-CE(z, t)`` (ascending it descends toward ``t``).
    ``dlr``: untargeted DLR, or the targeted DLR toward ``t``.
    """
    if loss == "ce":
        if target is None:
            return ce_loss_and_grad(logits, y)
        value, grad = ce_loss_and_grad(logits, target)
        return value.neg_(), grad.neg_()
    if target is None:
        return dlr_loss_and_grad(logits, y)
    return targeted_dlr_loss_and_grad(logits, y, target)
