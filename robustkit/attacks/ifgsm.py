"""I-FGSM, the basic iterative method (Kurakin et al. 2017), with D-FGSM's temperature as an option."""
from __future__ import annotations

from typing import Optional

from torch import nn

from robustkit.attacks.gradient_base import GradientAttack, StepRule, default_step_size


class IFGSM(GradientAttack):
    """Iterative FGSM / basic iterative method (Kurakin et al. 2017), Eq. of Section 2.2 there:
    ``x_{i+1} = clip_{x, eps}(x_i + step_size * sign(∇x J(x_i, y)))`` from ``x_0 = x``.

    ``step_size`` defaults to ``eps / steps``. Targeted, it descends the cross-entropy toward the target
    (the iterative least-likely / target-class method). ``**options`` as in :class:`robustkit.attacks.FGSM`.

    Example::

        >>> x_adv = IFGSM(model, eps=0.1, steps=10)(x, y, target="least_likely")
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, steps: int = 10,
                 step_size: Optional[float] = None, **options):
        step_size = default_step_size(type(self).__name__, eps, steps, step_size)
        super().__init__(model, eps=eps, rule=StepRule(step_size=step_size, steps=steps), **options)


#: the name Kurakin et al. use
BIM = IFGSM
