"""Projected gradient descent (Madry et al. 2018) in the L-inf and L2 balls."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from robustkit.attacks._gradient import GradientAttack, StepRule


class PGD(GradientAttack):
    """PGD (Madry et al. 2018, Eq. 2): from a random point of the eps-ball,
    ``x_{i+1} = Π_{x, eps}(x_i + step_size * sign(∇x J(x_i, y)))`` for ``norm="linf"``, and
    ``x_{i+1} = Π_{x, eps}(x_i + step_size * ∇ / ||∇||_2)`` for ``norm="l2"``, each then clipped to [0, 1].

    ``random_start=True`` draws the start uniformly from the L-inf ball, or uniformly from the volume of
    the L2 ball (Gaussian direction, radius ``eps * U^(1/n)``), clipped to [0, 1], with the attack's
    ``seed``. ``temperature``, ``models``, ``fusion``: see :class:`robustkit.attacks.FGSM`.

    Example::

        >>> atk = PGD(model, eps=8 / 255, step_size=2 / 255, steps=10)
        >>> x_adv = atk(x, y)
        >>> res = PGD(model, eps=0.3, step_size=0.01, steps=40, early_stop=True).run(x, y)
        >>> robust_accuracy = 1 - res.success.float().mean()
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, step_size: float = 2 / 255,
                 steps: int = 10, norm: str = "linf", random_start: bool = True, temperature: float = 1.0,
                 models: Optional[Sequence[nn.Module]] = None, fusion: str = "loss", soft_weight: float = 1.0,
                 hard_weight: float = 0.0, weights: Optional[Sequence[float]] = None, amp: bool = False,
                 batch_size: Optional[int] = None, seed: Optional[int] = None, early_stop: bool = False,
                 streams="auto", conv_input_grad: str = "robustkit"):
        if not isinstance(random_start, bool):
            raise TypeError(f"PGD: random_start must be a bool, got {type(random_start).__name__}")
        rule = StepRule(eps=eps, step_size=step_size, steps=steps, norm=norm, random_start=random_start)
        super().__init__(model, rule=rule, models=models, temperature=temperature, soft_weight=soft_weight,
                         hard_weight=hard_weight, fusion=fusion, weights=weights, amp=amp, batch_size=batch_size,
                         seed=seed, early_stop=early_stop, streams=streams, conv_input_grad=conv_input_grad)
