"""FGSM and I-FGSM (BIM), with the self-distillation variant D-FGSM via ``temperature``."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from robustkit.attacks._gradient import GradientAttack, StepRule, default_step_size


class FGSM(GradientAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): ``x_adv = clip(x + eps * sign(∇x J(x, y)))``.

    Targeted (``target=t``) it steps down the cross-entropy toward ``t``: ``x - eps * sign(∇x J(x, t))``.
    With ``temperature=T`` it is D-FGSM of the self-distillation attack (Section 4.1):
    ``x + eps * sign(∇x J(L(x) / T, y))``; with ``models=[...]`` the loss is fused as in its Eq. 8
    (``fusion="loss"``) or the logits are averaged (``fusion="logits"``, Dong et al. 2018).

    Example::

        >>> atk = FGSM(model, eps=8 / 255)
        >>> x_adv = atk(x, y)
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, temperature: float = 1.0,
                 models: Optional[Sequence[nn.Module]] = None, fusion: str = "loss", soft_weight: float = 1.0,
                 hard_weight: float = 0.0, weights: Optional[Sequence[float]] = None, amp: bool = False,
                 batch_size: Optional[int] = None, seed: Optional[int] = None, early_stop: bool = False,
                 streams="auto", conv_input_grad: str = "robustkit"):
        super().__init__(model, rule=StepRule(eps=eps, step_size=eps, steps=1), models=models,
                         temperature=temperature, soft_weight=soft_weight, hard_weight=hard_weight, fusion=fusion,
                         weights=weights, amp=amp, batch_size=batch_size, seed=seed, early_stop=early_stop,
                         streams=streams, conv_input_grad=conv_input_grad)


class IFGSM(GradientAttack):
    """Iterative FGSM / basic iterative method (Kurakin et al. 2017), Eq. of Section 2.2 there:
    ``x_{i+1} = clip_{x, eps}(x_i + step_size * sign(∇x J(x_i, y)))`` from ``x_0 = x``.

    ``step_size`` defaults to ``eps / steps``. Targeted, it descends the cross-entropy toward the target
    (the iterative least-likely / target-class method). ``temperature``, ``models``, ``fusion`` as in
    :class:`FGSM`.

    Example::

        >>> x_adv = IFGSM(model, eps=0.1, steps=10)(x, y, target="least_likely")
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, steps: int = 10,
                 step_size: Optional[float] = None, temperature: float = 1.0,
                 models: Optional[Sequence[nn.Module]] = None, fusion: str = "loss", soft_weight: float = 1.0,
                 hard_weight: float = 0.0, weights: Optional[Sequence[float]] = None, amp: bool = False,
                 batch_size: Optional[int] = None, seed: Optional[int] = None, early_stop: bool = False,
                 streams="auto", conv_input_grad: str = "robustkit"):
        step_size = default_step_size(type(self).__name__, eps, steps, step_size)
        super().__init__(model, rule=StepRule(eps=eps, step_size=step_size, steps=steps), models=models,
                         temperature=temperature, soft_weight=soft_weight, hard_weight=hard_weight, fusion=fusion,
                         weights=weights, amp=amp, batch_size=batch_size, seed=seed, early_stop=early_stop,
                         streams=streams, conv_input_grad=conv_input_grad)


BIM = IFGSM
