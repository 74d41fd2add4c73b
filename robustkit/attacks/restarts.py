"""Random restarts: run an attack ``restarts`` times from independent random starts and keep, per sample,
the best result. Evaluation attacks (APGD, PGD) restart only the samples no earlier run broke, so a restart
costs in proportion to the robust samples left.

"Best" per sample: a successful result beats an unsuccessful one; among successful results of a
minimal-norm attack (DeepFool, C&W) the smaller perturbation wins; otherwise the earlier result stays.

:class:`MinimalNormSearch` is the base of the minimal-norm attacks that take ``eot`` and ``restarts``
(DeepFool, C&W): it owns the restart loop and the expected logits, the attacks implement one run from a given
start.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from robustkit.attacks.base import AttackOutput, MinimalNormAttack, is_success
from robustkit.attacks.eot import check_eot, logit_draws


def check_restarts(name: str, restarts) -> int:
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"{name}: restarts must be an int >= 1 (the number of random starts), got {restarts!r}")
    return restarts


RunOnce = Callable[[Tensor, Tensor, Optional[Tensor], int], AttackOutput]
Judge = Callable[[Tensor, Tensor, Tensor, Optional[Tensor]], Tensor]


def best_of_restarts(run_once: RunOnce, judge: Judge, x: Tensor, y: Tensor, target: Optional[Tensor],
                     restarts: int) -> AttackOutput:
    """Runs ``run_once(x_sub, y_sub, target_sub, restart_index)`` up to ``restarts`` times, each restart only on
    the samples not yet successful (a fixed-budget attack; minimal-norm attacks use
    :class:`MinimalNormSearch`). ``judge(adv, x, y, target) -> [B] bool`` says which results succeed.
    ``steps`` add up over the restarts; extras are taken from the kept result."""
    out = run_once(x, y, target, 0)
    if restarts == 1:
        return out
    adv, steps = out.adv.clone(), out.steps.clone()
    extras = {k: v.clone() for k, v in out.extras.items()}
    success = judge(adv, x, y, target)
    for index in range(1, restarts):
        rows = (~success).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        t_sub = None if target is None else target[rows]
        part = run_once(x[rows], y[rows], t_sub, index)
        steps[rows] += part.steps
        better = judge(part.adv, x[rows], y[rows], t_sub)
        chosen = rows[better]
        adv[chosen] = part.adv[better]
        for key, value in part.extras.items():
            if key in extras:
                extras[key][chosen] = value[better]
        success[chosen] = True
    return AttackOutput(adv=adv, steps=steps, extras=extras)


def random_point_at(x: Tensor, radius: Tensor, norm: str, generator: Optional[torch.Generator]) -> Tensor:
    """A random point at distance ``radius [B]`` from each ``x`` in ``norm`` (L-inf: a uniform direction
    scaled to L-inf norm ``radius``; L2: a Gaussian direction scaled to L2 norm ``radius``), clipped to
    [0, 1]; ``x`` itself where the radius is 0. Draws the noise for the whole batch either way."""
    view = (-1,) + (1,) * (x.dim() - 1)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).mul_(2).sub_(1)
        noise = noise / noise.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(view)
    else:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
    return (x + noise * radius.to(x.dtype).view(view)).clamp_(0.0, 1.0)


class MinimalNormSearch(MinimalNormAttack):
    """A minimal-norm attack with an expectation over transformation and random restarts.

    Subclasses implement ``_attack_from(x, y, target, start, generator) -> AttackOutput``, one run from
    ``start`` (a point near ``x``; the returned perturbation is measured from ``x``), and take every forward
    from :meth:`expected_logits` or :meth:`logit_draws`.

    Args:
        eot: the number of stochastic forwards each forward of the attack averages (Athalye et al. 2018): the
            attack follows the gradient of the expected logits or the expected loss, and a point counts as
            adversarial when the expected logits say so. 1: one forward, the plain attack.
        eot_batched: the ``eot`` copies go through the model as one batch of ``eot * B`` rows (``False``: one
            forward per copy, for models that draw one random transformation per call, or to bound memory).
        restarts: runs per sample; the first from ``x``, each further one from a random point at distance
            ``min(best, restart_radius) / 2`` from ``x`` (``best`` the smallest successful perturbation so far,
            FAB's rule), in the attack's norm (L2 for ``norm="l0"``). A sample no run has broken restarts at
            ``restart_radius / 2``, or from ``x`` when ``restart_radius`` is None. The result keeps, per
            sample, the smallest successful perturbation over the runs (the earliest on ties; the first run's
            result where none succeeds); ``steps`` add up over the runs.
        restart_radius: caps the restart distance (needed for ``norm="l0"``, where it is an L2 distance).
    """

    def __init__(self, model: Optional[nn.Module] = None, *, norm: str, eot: int = 1, eot_batched: bool = True,
                 restarts: int = 1, restart_radius: Optional[float] = None, **options):
        super().__init__(model, norm=norm, **options)
        name = type(self).__name__
        self.eot = check_eot(name, eot)
        self.restarts = check_restarts(name, restarts)
        if not isinstance(eot_batched, bool):
            raise TypeError(f"{name}: eot_batched must be a bool, got {type(eot_batched).__name__}")
        if restart_radius is not None and (isinstance(restart_radius, bool)
                                           or not isinstance(restart_radius, (int, float))
                                           or not (math.isfinite(restart_radius) and restart_radius > 0)):
            raise ValueError(f"{name}: restart_radius must be None or a finite number > 0, got {restart_radius!r}")
        if restarts > 1 and norm == "l0" and restart_radius is None:
            raise ValueError(f"{name}: restarts > 1 with norm='l0' needs restart_radius (the L2 distance of the "
                             "random starts)")
        self.eot_batched = eot_batched
        self.restart_radius = None if restart_radius is None else float(restart_radius)

    def logit_draws(self, x: Tensor) -> Tensor:
        """``[eot, B, C]`` logits of the ``eot`` stochastic forwards at ``x``, graph kept."""
        return logit_draws(self.logits, x, self.eot, batched=self.eot_batched)

    def expected_logits(self, x: Tensor) -> Tensor:
        """``[B, C]`` the mean logits over ``eot`` forwards (the plain logits for ``eot=1``), graph kept."""
        return self.logits(x) if self.eot == 1 else self.logit_draws(x).mean(dim=0)

    def _succeeds(self, logits: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        """``[B]`` whether ``logits`` (expected logits) count as adversarial; C&W adds its confidence."""
        return is_success(logits, y, target)

    def _perturbation_size(self, adv: Tensor, x: Tensor) -> Tensor:
        """``[B]`` the size in the attack's norm that restarts minimise."""
        delta = (adv - x).flatten(1)
        return delta.abs().amax(dim=1) if self.norm == "linf" else delta.norm(dim=1)

    def _attack_from(self, x: Tensor, y: Tensor, target: Optional[Tensor], start: Tensor,
                     generator: Optional[torch.Generator]) -> AttackOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement _attack_from")

    def _attack(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                generator: Optional[torch.Generator]) -> AttackOutput:
        out = self._attack_from(x, y, target, x.clone(), generator)
        if x.shape[0] == 0 or (self.restarts == 1 and self.eot == 1):
            return out
        with torch.no_grad():
            logits = self.expected_logits(out.adv)
        if self.restarts == 1:
            out.logits = logits  # run() judges success on the expected logits, not on one more draw
            return out
        adv, steps = out.adv.clone(), out.steps.clone()
        extras = {k: v.clone() for k, v in out.extras.items()}
        size = torch.where(self._succeeds(logits, y, target), self._perturbation_size(adv, x),
                           x.new_full((x.shape[0],), math.inf))
        start_norm = "l2" if self.norm == "l0" else self.norm
        for _ in range(1, self.restarts):
            radius = size if self.restart_radius is None else size.clamp(max=self.restart_radius)
            radius = torch.where(radius.isfinite(), radius * 0.5, torch.zeros_like(radius))
            part = self._attack_from(x, y, target, random_point_at(x, radius, start_norm, generator), generator)
            with torch.no_grad():
                part_logits = self.expected_logits(part.adv)
            new_size = self._perturbation_size(part.adv, x)
            better = self._succeeds(part_logits, y, target) & (new_size < size)
            steps += part.steps
            adv[better], logits[better], size[better] = part.adv[better], part_logits[better], new_size[better]
            for key, value in part.extras.items():
                if key in extras:
                    extras[key][better] = value[better]
        return AttackOutput(adv=adv, steps=steps, extras=extras, logits=logits)
