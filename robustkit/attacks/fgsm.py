"""FGSM (Goodfellow et al. 2015), with the self-distillation variant D-FGSM via ``temperature``."""
from __future__ import annotations

from typing import Optional

from torch import nn

from robustkit.attacks.gradient_base import GradientAttack, StepRule


class FGSM(GradientAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): ``x_adv = clip(x + eps * sign(∇x J(x, y)))``.

    Targeted (``target=t``) it steps down the cross-entropy toward ``t``: ``x - eps * sign(∇x J(x, t))``.
    With ``temperature=T`` it is D-FGSM of the self-distillation attack (Section 4.1):
    ``x + eps * sign(∇x J(L(x) / T, y))``; with ``models=[...]`` the loss is fused as in its Eq. 8
    (``fusion="loss"``) or the logits are averaged (``fusion="logits"``, Dong et al. 2018).

    ``**options``: the family's loss options and ``early_stop`` (:class:`GradientAttack`) and the shared
    :class:`robustkit.attacks.AttackOptions`.

    Example::

        >>> atk = FGSM(model, eps=8 / 255)
        >>> x_adv = atk(x, y)
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, **options):
        super().__init__(model, eps=eps, rule=StepRule(step_size=eps, steps=1), **options)
