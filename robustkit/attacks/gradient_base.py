"""The shared loop of the sign-gradient attacks (FGSM, I-FGSM, PGD, MI-FGSM and their distilled variants).

Every step is: forward of each model -> one fused ``ensemble_temperature_ce`` (its forward and backward
kernels called directly for the logit gradient, ``ensemble_temperature_ce_grad``) -> ``torch.autograd.grad``
with respect to the input only -> one fused, in-place ``sign_momentum_step``. Without early stop the loop
has no host synchronisation (no ``.item()``, no branch on tensor values) after its first step.

Early stop (``early_stop=True``, for robust-accuracy evaluation): the success of ``x_i`` is read from the
logits of the forward pass that step ``i`` needs anyway, so detecting success costs no extra forward. A
sample that has succeeded at step ``i`` keeps ``x_i`` (the first successful iterate) and leaves the active
batch; the others continue from the same state they would have in a fixed-step run. ``success`` is then
"succeeded at some step", and ``steps`` the iterations each sample used. The adversarial images of
successful samples therefore differ from a fixed-step run's final images (they are earlier iterates).

Extending the family: :meth:`GradientAttack._loss_gradient` is the one place where a step's loss gradient is
computed (an expectation over transformations averages it there), and :meth:`GradientAttack._attack` the one
place that draws a random start (restarts loop there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from robustkit.attacks.base import AttackOutput, FixedBudgetAttack, is_success
from robustkit.attacks.eot import check_eot
from robustkit.attacks.restarts import best_of_restarts, check_restarts
from robustkit.ops import ensemble_temperature_ce, ensemble_temperature_ce_grad, sign_momentum_step

_FUSIONS = ("loss", "logits")


@dataclass(frozen=True)
class StepRule:
    """The per-step update besides the ball (``eps``, ``norm`` live on the attack): step size, step count,
    random start, and the momentum decay (None: no momentum buffer, as in FGSM, I-FGSM and PGD)."""

    step_size: float
    steps: int
    random_start: bool = False
    decay: Optional[float] = None

    @property
    def grad_norm(self) -> str:
        return "l1" if self.decay is not None else "none"


class GradientAttack(FixedBudgetAttack):
    """Base of the sign-gradient attacks; subclasses choose a :class:`StepRule` and their defaults.

    Keyword arguments of the whole family (``**options`` of FGSM, IFGSM, PGD, MIFGSM):
        temperature: T > 0 divides the logits inside the cross-entropy (the self-distillation attack,
            D-FGSM / D-MIFGSM; T = 1 is the plain attack).
        soft_weight, hard_weight: λ1 and λ2 of Eq. 8 of the self-distillation attack: the loss is
            ``λ1 Σ_k CE(z_k / T, y) + λ2 Σ_k CE(z_k, y)`` over the K models (``fusion="loss"``).
        fusion: ``"loss"`` (Eq. 8) or ``"logits"`` (Dong et al. 2018: the CE of the weighted mean logits).
        weights: per-model weights for ``fusion="logits"`` (uniform by default; an
            :class:`robustkit.nn.Ensemble` passed as the model brings its own). Success is judged on the same
            weighted mean.
        early_stop: for robust-accuracy evaluation, drop samples from the active batch once they succeed.
            ``success`` is then "succeeded at some step" (the same robust accuracy as a fixed-step run
            whenever that run's success is monotone, e.g. untargeted PGD on an undefended model), ``adv``
            holds each sample's *first* successful iterate, so the images differ from a fixed-step run's,
            and ``steps`` the iterations each sample used. Costs one host sync per step.
        eot: average each step's gradient over ``eot`` stochastic forwards (expectation over transformation,
            for randomized models), as one forward of ``eot * B`` rows; success is judged on the mean logits.
        restarts: run up to ``restarts`` times and keep, per sample, the first successful result; restarts
            after the first start from a uniformly random point of the ball (even for FGSM and MI-FGSM) and
            attack only the samples not yet successful.
        models, amp, batch_size, seed, streams, conv_input_grad, attack_mode: the shared
            :class:`robustkit.attacks.AttackOptions`.
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float, norm: str = "linf", rule: StepRule,
                 temperature: float = 1.0, soft_weight: float = 1.0, hard_weight: float = 0.0, fusion: str = "loss",
                 weights: Optional[Sequence[float]] = None, early_stop: bool = False, eot: int = 1,
                 restarts: int = 1, **options):
        super().__init__(model, eps=eps, norm=norm, **options)
        name = type(self).__name__
        self.eot = check_eot(name, eot)
        self.restarts = check_restarts(name, restarts)
        _check_number(name, "step_size", rule.step_size, minimum=0.0)
        if isinstance(rule.steps, bool) or not isinstance(rule.steps, int) or rule.steps < 1:
            raise ValueError(f"{name}: steps must be an int >= 1, got {rule.steps!r}")
        if rule.decay is not None:
            _check_number(name, "decay", rule.decay, minimum=0.0)
        _check_number(name, "temperature", temperature, minimum=0.0, strict=True)
        _check_number(name, "soft_weight", soft_weight, minimum=0.0)
        _check_number(name, "hard_weight", hard_weight, minimum=0.0)
        if soft_weight == 0 and hard_weight == 0:
            raise ValueError(f"{name}: soft_weight and hard_weight are both 0, so the loss is 0; set one > 0")
        if fusion not in _FUSIONS:
            raise ValueError(f"{name}: fusion must be one of {_FUSIONS}, got {fusion!r}")
        if weights is not None:
            if fusion != "logits":
                raise ValueError(f"{name}: weights apply to fusion='logits' only")
            if self.ensemble.weights is not None:
                raise ValueError(f"{name}: pass weights either to the Ensemble or to the attack, not both")
            if len(weights) != len(self.models):
                raise ValueError(f"{name}: weights must have one entry per model ({len(self.models)}), "
                                 f"got {len(weights)}")
            self.ensemble = type(self.ensemble)(self.models, weights=weights)
        elif self.ensemble.weights is not None and fusion != "logits":
            raise ValueError(f"{name}: a weighted Ensemble needs fusion='logits' (fusion='loss' sums the members' "
                             "losses unweighted)")
        if not isinstance(early_stop, bool):
            raise TypeError(f"{name}: early_stop must be a bool, got {type(early_stop).__name__}")
        if not isinstance(rule.random_start, bool):
            raise TypeError(f"{name}: random_start must be a bool, got {type(rule.random_start).__name__}")
        self.rule = rule
        self.temperature = float(temperature)
        self.soft_weight = float(soft_weight)
        self.hard_weight = float(hard_weight)
        self.fusion = fusion
        self.weights = self.ensemble.weights
        self.early_stop = early_stop

    # convenient read-only views of the rule
    step_size = property(lambda self: self.rule.step_size)
    steps = property(lambda self: self.rule.steps)

    def __repr__(self) -> str:
        r = self.rule
        return (f"{type(self).__name__}(eps={self.eps:.6g}, step_size={r.step_size:.6g}, steps={r.steps}, "
                f"norm={self.norm!r}, random_start={r.random_start}, decay={r.decay}, "
                f"temperature={self.temperature:g}, soft_weight={self.soft_weight:g}, "
                f"hard_weight={self.hard_weight:g}, fusion={self.fusion!r}, models={len(self.models)}, "
                f"early_stop={self.early_stop}, eot={self.eot}, restarts={self.restarts})")

    # ---- the step ---------------------------------------------------------------------------------------
    def _loss_gradient(self, x_adv: Tensor, label: Tensor, targeted: bool, *,
                       check: bool = False) -> Tuple[Tensor, Tensor]:
        """The one place a step's gradient is computed: the models' forward at ``x_adv`` and the input gradient
        of the fused loss, pointing in the direction that helps the attack. Returns ``(logits, grad)``: the
        ensemble's logits at ``x_adv`` (detached; early stop reads success from them) and ``grad``, ``x_adv``'s
        shape. ``check``: compare ``label`` with the models' output size (the first step does)."""
        x_var = x_adv.detach().requires_grad_(True)
        if self.eot > 1:
            # EOT: eot copies as one batch; the repeat's backward sums the copies' gradients into x_var
            rows = (self.eot,) + (1,) * (x_var.dim() - 1)
            outs = self.member_logits(x_var.repeat(rows))
            if check:
                self.check_classes(outs[0].shape[1], label, targeted)
            grad = self._fused_gradient(outs, x_var, label.repeat(self.eot), targeted).div_(self.eot)
            copies = self.ensemble.combine([o.detach() for o in outs])
            return copies.view(self.eot, x_var.shape[0], -1).mean(dim=0), grad
        outs = self.member_logits(x_var)
        if check:
            self.check_classes(outs[0].shape[1], label, targeted)
        logits = self.ensemble.combine([o.detach() for o in outs])
        return logits, self._fused_gradient(outs, x_var, label, targeted)

    def _fused_gradient(self, outs: List[Tensor], x_var: Tensor, label: Tensor, targeted: bool) -> Tensor:
        if self.fusion == "logits":
            # the logit average is part of the differentiated graph: through the op's autograd formula
            logits = outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)
            loss = ensemble_temperature_ce(logits, label, temperature=self.temperature, soft_weight=self.soft_weight,
                                           hard_weight=self.hard_weight, reduction="sum", fusion="logits",
                                           weights=self.weights)
            # Targeted attacks descend the CE toward the target: negating the scalar costs nothing, whereas
            # negating the gradient would be another pass over the images.
            (grad,) = torch.autograd.grad(-loss if targeted else loss, x_var)
            return grad
        # Eq. 8: the loss gradient w.r.t. each member's logits comes straight from the fused kernels (no
        # autograd node for the loss, its sum or a stack), then one backward through the models to x only.
        # One model: a [1, B, C] view instead of torch.stack's copy.
        detached = [o.detach() for o in outs]
        logits = detached[0].unsqueeze(0) if len(outs) == 1 else torch.stack(detached)
        grad_logits = ensemble_temperature_ce_grad(logits, label, temperature=self.temperature,
                                                   soft_weight=self.soft_weight, hard_weight=self.hard_weight,
                                                   scale=-1.0 if targeted else 1.0)
        (grad,) = torch.autograd.grad(outs, x_var, grad_outputs=list(grad_logits.unbind(0)))
        return grad

    def _step(self, x_adv: Tensor, x: Tensor, grad: Tensor, momentum: Optional[Tensor]) -> None:
        r = self.rule
        sign_momentum_step(x_adv, x, grad, momentum, step_size=r.step_size, eps=self.eps,
                           decay=0.0 if r.decay is None else r.decay, grad_norm=r.grad_norm, norm=self.norm)

    def _start(self, x: Tensor, generator: Optional[torch.Generator], random: Optional[bool] = None) -> Tensor:
        """x itself, or a uniformly random point of the eps-ball around it (PGD; any restart after the first),
        clipped to [0, 1]."""
        if not (self.rule.random_start if random is None else random) or self.eps == 0:
            return x.clone()
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            noise = noise.mul_(2 * self.eps).sub_(self.eps)
        else:
            # uniform in the L2 ball: a Gaussian direction, radius eps * U^(1/n) for n dimensions
            direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            n = direction[0].numel()
            radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype).pow_(1.0 / max(n, 1))
            scale = radius * self.eps / direction.flatten(1).norm(dim=1).clamp_min(1e-12)
            noise = direction.mul_(scale.view(-1, *([1] * (x.dim() - 1))))
        return (x + noise).clamp_(0.0, 1.0)

    # ---- the loops --------------------------------------------------------------------------------------
    def _attack(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                generator: Optional[torch.Generator]) -> AttackOutput:
        if x.shape[0] == 0:
            return AttackOutput(adv=x.clone(), steps=y.new_zeros((0,)))
        if self.restarts == 1:
            return self._run_once(x, y, target, generator, restart=0)
        return best_of_restarts(lambda xs, ys, ts, index: self._run_once(xs, ys, ts, generator, restart=index),
                                lambda adv, xs, ys, ts: is_success(self.predict(adv), ys, ts),
                                x, y, target, self.restarts)

    def _run_once(self, x: Tensor, y: Tensor, target: Optional[Tensor], generator: Optional[torch.Generator],
                  restart: int) -> AttackOutput:
        label = y if target is None else target
        # the one place a run's (random) start is drawn
        start = self._start(x, generator, random=None if restart == 0 else True)
        if self.early_stop:
            return self._run_early_stop(x, start, y, target, label)
        return self._run_fixed(x, start, label, target is not None)

    def _new_momentum(self, x: Tensor) -> Optional[Tensor]:
        return torch.zeros_like(x) if self.rule.decay is not None else None

    def _run_fixed(self, x: Tensor, x_adv: Tensor, label: Tensor, targeted: bool) -> AttackOutput:
        momentum = self._new_momentum(x)
        for i in range(self.rule.steps):
            _, grad = self._loss_gradient(x_adv, label, targeted, check=i == 0)
            with torch.no_grad():
                self._step(x_adv, x, grad, momentum)
        return AttackOutput(adv=x_adv, steps=torch.full_like(label, self.rule.steps))

    def _run_early_stop(self, x: Tensor, start: Tensor, y: Tensor, target: Optional[Tensor],
                        label: Tensor) -> AttackOutput:
        targeted = target is not None
        batch = x.shape[0]
        adv = start.clone()  # [B, ...] final images; rows of finished samples are frozen
        steps = torch.full_like(y, self.rule.steps)
        logits_out: Optional[Tensor] = None  # [B, C] ensemble logits of each sample's returned image
        active = torch.arange(batch, device=x.device)
        x_adv, x_act, label_act = start, x, label
        momentum = self._new_momentum(x)
        for i in range(self.rule.steps + 1):
            last = i == self.rule.steps
            if last:
                logits, grad = self.predict(x_adv), None
            else:
                logits, grad = self._loss_gradient(x_adv, label_act, targeted, check=i == 0)
            if logits_out is None:
                logits_out = logits.new_empty((batch, logits.shape[1]))
            done = is_success(logits, y[active], None if target is None else target[active])
            if last:
                done = torch.ones_like(done)
            finished = done.nonzero().squeeze(1)
            if finished.numel():  # host sync: early stop trades it for a smaller batch
                rows = active[finished]
                adv[rows] = x_adv[finished].detach()
                logits_out[rows] = logits[finished]
                if not last:
                    steps[rows] = i
            if last:
                break
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            if keep.numel() < done.numel():  # compact the active batch (gather); results are scattered above
                active, x_act, label_act = active[keep], x_act[keep], label_act[keep]
                x_adv, grad = x_adv[keep], grad[keep]
                momentum = None if momentum is None else momentum[keep]
            with torch.no_grad():
                self._step(x_adv, x_act, grad, momentum)
        return AttackOutput(adv=adv, steps=steps, logits=logits_out)


def _check_number(name: str, arg: str, value: float, *, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: {arg} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name}: {arg} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")


def default_step_size(name: str, eps: float, steps: int, step_size: Optional[float]) -> float:
    """``eps / steps`` (the I-FGSM and MI-FGSM papers' α = ε / T) unless given."""
    if step_size is not None:
        return step_size
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name}: steps must be an int >= 1, got {steps!r}")
    _check_number(name, "eps", eps, minimum=0.0)
    return eps / steps


__all__ = ["GradientAttack", "StepRule", "default_step_size"]
