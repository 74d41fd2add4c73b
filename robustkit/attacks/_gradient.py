"""The shared loop of the sign-gradient attacks (FGSM, I-FGSM, PGD, MI-FGSM and their distilled variants).

Every step is: forward of each model -> one fused ``ensemble_temperature_ce`` (its forward and backward
kernels called directly for the logit gradient, ``ensemble_temperature_ce_grad``) -> ``torch.autograd.grad``
with respect to the input only -> one fused, in-place ``sign_momentum_step``. Without early stop the loop
has no host synchronisation (no ``.item()``, no branch on tensor values).

Early stop (``early_stop=True``, for robust-accuracy evaluation): the success of ``x_i`` is read from the
logits of the forward pass that step ``i`` needs anyway, so detecting success costs no extra forward. A
sample that has succeeded at step ``i`` keeps ``x_i`` (the first successful iterate) and leaves the active
batch; the others continue from the same state they would have in a fixed-step run. ``success`` is then
"succeeded at some step", and ``steps`` the iterations each sample used. The adversarial images of
successful samples therefore differ from a fixed-step run's final images (they are earlier iterates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from robustkit.attacks.base import Attack, AttackResult, is_success
from robustkit.ops import ensemble_temperature_ce, ensemble_temperature_ce_grad, sign_momentum_step

_NORMS = ("linf", "l2")
_FUSIONS = ("loss", "logits")


@dataclass(frozen=True)
class StepRule:
    """The per-step update: which norm ball, whether there is a momentum buffer, how grads are normalised."""

    eps: float
    step_size: float
    steps: int
    norm: str = "linf"
    random_start: bool = False
    decay: Optional[float] = None  # None: no momentum buffer (FGSM, I-FGSM, PGD)

    @property
    def grad_norm(self) -> str:
        return "l1" if self.decay is not None else "none"


class GradientAttack(Attack):
    """Base of the sign-gradient attacks; subclasses only choose a :class:`StepRule` and defaults.

    Shared keyword arguments (all attacks of this family):
        temperature: T > 0 divides the logits inside the cross-entropy (the self-distillation attack,
            D-FGSM / D-MIFGSM; T = 1 is the plain attack).
        soft_weight, hard_weight: λ1 and λ2 of Eq. 8 of the self-distillation attack: the loss is
            ``λ1 Σ_k CE(z_k / T, y) + λ2 Σ_k CE(z_k, y)`` over the K models (``fusion="loss"``).
        fusion: ``"loss"`` (Eq. 8) or ``"logits"`` (Dong et al. 2018: the CE of the weighted mean logits).
        weights: per-model weights for ``fusion="logits"`` (uniform by default).
        early_stop: for robust-accuracy evaluation, drop samples from the active batch once they succeed.
            ``success`` is then "succeeded at some step" (the same robust accuracy as a fixed-step run
            whenever that run's success is monotone, e.g. untargeted PGD on an undefended model), ``adv``
            holds each sample's *first* successful iterate, so the images differ from a fixed-step run's,
            and ``steps`` the iterations each sample used. Costs one host sync per step.
        model / models / amp / batch_size / seed / streams / conv_input_grad: see
            :class:`robustkit.attacks.base.Attack` (``streams``: the K member forwards of an ensemble on separate
            CUDA streams; ``conv_input_grad``: robustkit's kernel for first-layer input gradients on CPU).
    """

    def __init__(self, model: Optional[nn.Module] = None, *, rule: StepRule, models: Optional[Sequence[nn.Module]],
                 temperature: float, soft_weight: float, hard_weight: float, fusion: str,
                 weights: Optional[Sequence[float]], amp: bool, batch_size: Optional[int], seed: Optional[int],
                 early_stop: bool, streams="auto", conv_input_grad: str = "robustkit"):
        super().__init__(model, models=models, amp=amp, batch_size=batch_size, seed=seed, streams=streams,
                         conv_input_grad=conv_input_grad)
        name = type(self).__name__
        _check_number(name, "eps", rule.eps, minimum=0.0)
        _check_number(name, "step_size", rule.step_size, minimum=0.0)
        if isinstance(rule.steps, bool) or not isinstance(rule.steps, int) or rule.steps < 1:
            raise ValueError(f"{name}: steps must be an int >= 1, got {rule.steps!r}")
        if rule.norm not in _NORMS:
            raise ValueError(f"{name}: norm must be one of {_NORMS}, got {rule.norm!r}")
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
            if len(weights) != len(self.models):
                raise ValueError(f"{name}: weights must have one entry per model ({len(self.models)}), "
                                 f"got {len(weights)}")
        if not isinstance(early_stop, bool):
            raise TypeError(f"{name}: early_stop must be a bool, got {type(early_stop).__name__}")
        self.rule = rule
        self.temperature = float(temperature)
        self.soft_weight = float(soft_weight)
        self.hard_weight = float(hard_weight)
        self.fusion = fusion
        self.weights = None if weights is None else [float(w) for w in weights]
        self.early_stop = early_stop
        self._images_only = False

    def __call__(self, x: Tensor, y: Tensor, target=None) -> Tensor:
        """The adversarial images only (for training loops): unlike ``run(...).adv`` it skips the extra
        forward pass that evaluates the final images for the result, 1/(3 * steps) of the attack's cost."""
        self._images_only = True
        try:
            return self.run(x, y, target=target).adv
        finally:
            self._images_only = False

    # convenient read-only views of the rule
    eps = property(lambda self: self.rule.eps)
    step_size = property(lambda self: self.rule.step_size)
    steps = property(lambda self: self.rule.steps)
    norm = property(lambda self: self.rule.norm)

    def __repr__(self) -> str:
        r = self.rule
        return (f"{type(self).__name__}(eps={r.eps:.6g}, step_size={r.step_size:.6g}, steps={r.steps}, "
                f"norm={r.norm!r}, random_start={r.random_start}, decay={r.decay}, temperature={self.temperature:g}, "
                f"soft_weight={self.soft_weight:g}, hard_weight={self.hard_weight:g}, fusion={self.fusion!r}, "
                f"models={len(self.models)}, early_stop={self.early_stop})")

    # ---- the step ---------------------------------------------------------------------------------------
    def _loss_gradient(self, outs: List[Tensor], x_var: Tensor, label: Tensor, targeted: bool) -> Tensor:
        """The input gradient of the fused loss, pointing in the direction that helps the attack."""
        # Targeted attacks descend the CE toward the target: negating the scalar costs nothing, whereas
        # negating the gradient would be another pass over the images.
        sign = -1.0 if targeted else 1.0
        if self.fusion == "logits":
            # the logit average is part of the differentiated graph: through the op's autograd formula
            logits = outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)
            loss = ensemble_temperature_ce(logits, label, temperature=self.temperature, soft_weight=self.soft_weight,
                                           hard_weight=self.hard_weight, reduction="sum", fusion="logits",
                                           weights=self.weights)
            (grad,) = torch.autograd.grad(-loss if targeted else loss, x_var)
            return grad
        # Eq. 8: the loss gradient w.r.t. each member's logits comes straight from the fused kernels (no
        # autograd node for the loss, its sum or a stack), then one backward through the models to x only.
        # One model: a [1, B, C] view instead of torch.stack's copy.
        detached = [o.detach() for o in outs]
        logits = detached[0].unsqueeze(0) if len(outs) == 1 else torch.stack(detached)
        grad_logits = ensemble_temperature_ce_grad(logits, label, temperature=self.temperature,
                                                   soft_weight=self.soft_weight, hard_weight=self.hard_weight,
                                                   scale=sign)
        (grad,) = torch.autograd.grad(outs, x_var, grad_outputs=list(grad_logits.unbind(0)))
        return grad

    def _step(self, x_adv: Tensor, x: Tensor, grad: Tensor, momentum: Optional[Tensor]) -> None:
        r = self.rule
        sign_momentum_step(x_adv, x, grad, momentum, step_size=r.step_size, eps=r.eps,
                           decay=0.0 if r.decay is None else r.decay, grad_norm=r.grad_norm, norm=r.norm)

    def _start(self, x: Tensor) -> Tensor:
        """x itself, or a uniformly random point of the eps-ball around it (PGD), clipped to [0, 1]."""
        r = self.rule
        if not r.random_start or r.eps == 0:
            return x.clone()
        g = self._generator
        if r.norm == "linf":
            noise = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype).mul_(2 * r.eps).sub_(r.eps)
        else:
            # uniform in the L2 ball: a Gaussian direction, radius eps * U^(1/n) for n dimensions
            direction = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
            n = direction[0].numel()
            radius = torch.rand(x.shape[0], generator=g, device=x.device, dtype=x.dtype).pow_(1.0 / max(n, 1))
            scale = radius * r.eps / direction.flatten(1).norm(dim=1).clamp_min(1e-12)
            noise = direction.mul_(scale.view(-1, *([1] * (x.dim() - 1))))
        return (x + noise).clamp_(0.0, 1.0)

    # ---- the loops --------------------------------------------------------------------------------------
    def _run_batch(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> AttackResult:
        if x.shape[0] == 0:
            return self.make_result(x, x.clone(), y, target, steps=y.new_zeros((0,)))
        label = y if target is None else target
        # y / target range against the class count: read before the loop, compared after the first forward
        label_max = int(label.max())
        if int(label.min()) < 0:
            raise ValueError(f"{type(self).__name__}: {'y' if target is None else 'target'} must hold classes "
                             f">= 0, got {int(label.min())}")
        if self.early_stop:
            return self._run_early_stop(x, y, target, label, label_max)
        return self._run_fixed(x, y, target, label, label_max)

    def _check_classes(self, outs: List[Tensor], label_max: int, targeted: bool) -> None:
        num_classes = outs[0].shape[1]
        if label_max >= num_classes:
            what = "target" if targeted else "y"
            raise ValueError(f"{type(self).__name__}: {what} must hold classes < {num_classes} (the models' "
                             f"output size), got {label_max}")

    def _new_momentum(self, x: Tensor) -> Optional[Tensor]:
        return torch.zeros_like(x) if self.rule.decay is not None else None

    def _run_fixed(self, x: Tensor, y: Tensor, target: Optional[Tensor], label: Tensor,
                   label_max: int) -> AttackResult:
        targeted = target is not None
        x_adv = self._start(x)
        momentum = self._new_momentum(x)
        for i in range(self.rule.steps):
            x_var = x_adv.detach().requires_grad_(True)
            outs = self.member_logits(x_var)
            if i == 0:
                self._check_classes(outs, label_max, targeted)
            grad = self._loss_gradient(outs, x_var, label, targeted)
            with torch.no_grad():
                self._step(x_adv, x, grad, momentum)
        steps = torch.full_like(y, self.rule.steps)
        if self._images_only:
            return _images_only_result(x, x_adv, y, target, steps)
        return self.make_result(x, x_adv, y, target, steps)

    def _run_early_stop(self, x: Tensor, y: Tensor, target: Optional[Tensor], label: Tensor,
                        label_max: int) -> AttackResult:
        targeted = target is not None
        batch = x.shape[0]
        adv = self._start(x)  # [B, ...] final images; rows of finished samples are frozen
        steps = torch.full_like(y, self.rule.steps)
        logits_out: Optional[Tensor] = None  # [B, C] mean logits of each sample's returned image
        active = torch.arange(batch, device=x.device)
        x_adv, x_act, label_act = adv.clone(), x, label
        momentum = self._new_momentum(x)
        for i in range(self.rule.steps + 1):
            last = i == self.rule.steps
            x_var = x_adv.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                outs = self.member_logits(x_var)
            if i == 0:
                self._check_classes(outs, label_max, targeted)
            mean_logits = (outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)).detach().float()
            if logits_out is None:
                logits_out = mean_logits.new_empty((batch, mean_logits.shape[1]))
            done = is_success(mean_logits, y[active], None if target is None else target[active])
            if last:
                done = torch.ones_like(done)
            finished = done.nonzero().squeeze(1)
            if finished.numel():  # host sync: early stop trades it for a smaller batch
                rows = active[finished]
                adv[rows] = x_adv[finished].detach()
                logits_out[rows] = mean_logits[finished]
                if not last:
                    steps[rows] = i
            if last:
                break
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            grad = self._loss_gradient(outs, x_var, label_act, targeted)
            if keep.numel() < done.numel():  # compact the active batch (gather); results are scattered above
                active, x_act, label_act = active[keep], x_act[keep], label_act[keep]
                x_adv, grad = x_adv[keep], grad[keep]
                momentum = None if momentum is None else momentum[keep]
            with torch.no_grad():
                self._step(x_adv, x_act, grad, momentum)
        return self.make_result(x, adv, y, target, steps, logits=logits_out)


def _images_only_result(x: Tensor, adv: Tensor, y: Tensor, target: Optional[Tensor], steps: Tensor) -> AttackResult:
    """What ``__call__`` needs: the images; the evaluation fields are left empty (never returned to users)."""
    unset = x.new_empty((0,))
    return AttackResult(adv=adv.detach(), success=y.new_empty((0,), dtype=torch.bool), logits=unset, linf=unset,
                        l2=unset, steps=steps, target=target)


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
