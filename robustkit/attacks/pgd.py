"""Projected gradient descent (Madry et al. 2018) in the L-inf and L2 balls."""
from __future__ import annotations

from typing import Optional

from torch import nn

from robustkit.attacks.gradient_base import GradientAttack, StepRule


class PGD(GradientAttack):
    """PGD (Madry et al. 2018, Eq. 2): from a random point of the eps-ball,
    ``x_{i+1} = Π_{x, eps}(x_i + step_size * sign(∇x J(x_i, y)))`` for ``norm="linf"``, and
    ``x_{i+1} = Π_{x, eps}(x_i + step_size * ∇ / ||∇||_2)`` for ``norm="l2"``, each then clipped to [0, 1].

    ``random_start=True`` draws the start uniformly from the L-inf ball, or uniformly from the volume of
    the L2 ball (Gaussian direction, radius ``eps * U^(1/n)``), clipped to [0, 1], drawn from
    the attack's generator (``seed``, or the call's ``generator=``). ``**options`` as in
    :class:`robustkit.attacks.FGSM`.

    Example::

        >>> atk = PGD(model, eps=8 / 255, step_size=2 / 255, steps=10)
        >>> x_adv = atk(x, y)
        >>> res = PGD(model, eps=0.3, step_size=0.01, steps=40, early_stop=True).run(x, y)
        >>> robust_accuracy = 1 - res.success.float().mean()
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, step_size: float = 2 / 255,
                 steps: int = 10, norm: str = "linf", random_start: bool = True, **options):
        rule = StepRule(step_size=step_size, steps=steps, random_start=random_start)
        super().__init__(model, eps=eps, norm=norm, rule=rule, **options)
