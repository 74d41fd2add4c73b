"""MI-FGSM (Dong et al. 2018) and the self-distillation attack's Ensemble D-MIFGSM (Algorithm 1)."""
from __future__ import annotations

from typing import Optional

from torch import nn

from robustkit.attacks.gradient_base import GradientAttack, StepRule, default_step_size


class MIFGSM(GradientAttack):
    """Momentum iterative FGSM (Dong et al. 2018, Eq. 6-7), from ``x_0 = x`` and ``g_0 = 0``::

        g_{i+1} = decay * g_i + ∇x J(x_i, y) / ||∇x J(x_i, y)||_1
        x_{i+1} = clip_{x, eps}(x_i + step_size * sign(g_{i+1}))

    ``step_size`` defaults to ``eps / steps`` (the paper's α = ε / T). Targeted, ``J`` is the
    cross-entropy toward the target and the step goes down it. ``temperature=T`` gives D-MIFGSM for
    one model (Section 4.1 of the self-distillation attack); ``models=[...]`` with ``fusion="loss"``
    fuses the 2K cross-entropies of its Eq. 8 (``soft_weight`` λ1, ``hard_weight`` λ2), and
    ``fusion="logits"`` averages the logits (Dong et al.'s ensemble).

    Example::

        >>> x_adv = MIFGSM(model, eps=16 / 255, steps=10)(x, y)
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, steps: int = 10,
                 step_size: Optional[float] = None, decay: float = 1.0, **options):
        step_size = default_step_size(type(self).__name__, eps, steps, step_size)
        super().__init__(model, eps=eps, rule=StepRule(step_size=step_size, steps=steps, decay=decay), **options)


class DMIFGSM(MIFGSM):
    """Ensemble D-MIFGSM, Algorithm 1 of the self-distillation attack, with its defaults: T = 16,
    λ1 = λ2 = 1 (Eq. 8 fuses ``Σ_k CE(l_k / T, y*) + Σ_k CE(l_k, y*)``), ε = 32/255, N = 20 iterations,
    μ = 1 and α = ε / N. The paper runs it targeted (``target=t``); untargeted it ascends the same loss.

    The models are passed as ``model=`` (one model or an :class:`robustkit.nn.Ensemble`) or ``models=[...]``,
    as to every attack. ``**options``: the shared :class:`robustkit.attacks.AttackOptions` and ``early_stop``.

    Example::

        >>> atk = DMIFGSM(models=[vgg16, vgg19, inc_v3])
        >>> x_adv = atk(x, y, target=t)
    """

    def __init__(self, model: Optional[nn.Module] = None, *, temperature: float = 16.0, soft_weight: float = 1.0,
                 hard_weight: float = 1.0, eps: float = 32 / 255, steps: int = 20, decay: float = 1.0, **options):
        super().__init__(model, eps=eps, steps=steps, decay=decay, temperature=temperature,
                         soft_weight=soft_weight, hard_weight=hard_weight, fusion="loss", **options)
