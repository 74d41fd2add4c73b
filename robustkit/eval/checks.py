"""Checks that catch evaluation mistakes and the signs of gradient masking before a robustness number is trusted
(after auto-attack's ``checks.py``, and the checklist of Carlini et al. 2019, "On evaluating adversarial
robustness", Sec. 5).

:func:`check_model` runs on one batch and returns (and emits, as :class:`EvaluationWarning`) one
:class:`CheckWarning` per problem found:

=====================  =====================================================================================
code                   what it means
=====================  =====================================================================================
``train_mode``         a module is in training mode: dropout and batch norm change the model being evaluated
``probabilities``      the outputs are non-negative and sum to 1: the attacks' losses expect logits
``nondeterministic``   two forwards of the same input differ: the model is randomized; use ``eot=`` or
                       ``AutoAttack(version="rand")``
``zero_gradient``      some samples have an all-zero input gradient: the loss is saturated or the gradient is
                       masked; gradient attacks see nothing there
``nonfinite_gradient`` the input gradient holds NaN or inf
``rises_with_eps``     robust accuracy under a gradient attack goes *up* as eps grows (it must fall)
``rises_with_steps``   robust accuracy goes up with more attack steps
``black_box_stronger`` the gradient-free Square attack breaks more samples than the white-box APGD: the
                       gradients mislead the attack
=====================  =====================================================================================

The last three need ``eps`` (the probes attack at ``eps`` and below, on at most ``max_samples`` samples).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from robustkit.attacks.apgd import APGD
from robustkit.attacks.square import Square
from robustkit.ops import sign_momentum_step

CODES = ("train_mode", "probabilities", "nondeterministic", "zero_gradient", "nonfinite_gradient",
         "rises_with_eps", "rises_with_steps", "black_box_stronger")


class EvaluationWarning(UserWarning):
    """A sign that an evaluation may overestimate robustness."""


@dataclass(frozen=True)
class CheckWarning:
    code: str
    message: str

    def as_dict(self) -> Dict[str, str]:
        return {"code": self.code, "message": self.message}


def _eval_mode(model: nn.Module):
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    return saved


def _restore(saved) -> None:
    for module, flag in saved:
        module.training = flag


def _tolerance(count: int) -> float:
    """How much a robust accuracy may rise before it is a finding, not noise: 2 samples and 3 points."""
    return max(2.0 / max(count, 1), 0.03)


def check_curve(values: Dict[float, float], *, what: str, count: int) -> Optional[CheckWarning]:
    """``values`` maps an attack strength (eps or steps) to robust accuracy on ``count`` samples; warns when
    accuracy rises with strength by more than :func:`_tolerance`."""
    keys = sorted(values)
    for weak, strong in zip(keys, keys[1:]):
        if values[strong] > values[weak] + _tolerance(count):
            code = "rises_with_eps" if what == "eps" else "rises_with_steps"
            return CheckWarning(code, f"robust accuracy rises with {what}: {values[weak]:.1%} at {what}="
                                      f"{weak:g} but {values[strong]:.1%} at {what}={strong:g}; the gradient "
                                      "attack is being misled (gradient masking); try BPDA, EOT or Square")
    return None


def check_black_box(white_box: float, black_box: float, *, count: int) -> Optional[CheckWarning]:
    """Warns when the black-box robust accuracy is below the white-box one by more than :func:`_tolerance`."""
    if black_box < white_box - _tolerance(count):
        return CheckWarning("black_box_stronger", f"the black-box Square attack leaves {black_box:.1%} robust "
                                                  f"accuracy, below the white-box APGD's {white_box:.1%}: the "
                                                  "gradients are masked; report the lower number and use "
                                                  "Square / AutoAttack")
    return None


def _sign_pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str, steps: int,
                       step_size: float) -> float:
    """Robust accuracy at the *final* iterate of a fixed-step PGD from ``x`` (no random start, no early
    stop): the probe whose number masking bends, where an attack that keeps its best iterate would not."""
    x_adv = x.clone()
    for _ in range(steps):
        x_var = x_adv.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_var).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_var)
        with torch.no_grad():
            sign_momentum_step(x_adv, x, grad.to(x.dtype), None, step_size=step_size, eps=eps, decay=0.0,
                               grad_norm="none", norm=norm)
    with torch.no_grad():
        return float((model(x_adv).argmax(dim=1) == y).float().mean())


def _static_checks(model: nn.Module, x: Tensor, y: Tensor, training_modules: Sequence[str]) -> List[CheckWarning]:
    found: List[CheckWarning] = []
    if training_modules:
        shown = ", ".join(training_modules[:3]) + (" ..." if len(training_modules) > 3 else "")
        found.append(CheckWarning("train_mode", f"the model is in training mode ({len(training_modules)} modules: "
                                                f"{shown}); call model.eval() before evaluating"))
    with torch.no_grad():
        first, second = model(x), model(x)
    if first.dim() == 2 and bool((first >= 0).all()) and torch.allclose(
            first.float().sum(dim=1), torch.ones_like(first[:, 0].float()), atol=1e-3):
        found.append(CheckWarning("probabilities", "the model's outputs are non-negative and sum to 1 "
                                                   "(probabilities); attacks need logits: remove the softmax"))
    if not torch.equal(first, second):
        gap = float((first - second).abs().max())
        found.append(CheckWarning("nondeterministic", f"two forwards of the same input differ (by up to {gap:.3g}): "
                                                      "the model is randomized; evaluate with eot=... on the "
                                                      "gradient attacks or AutoAttack(version=\"rand\")"))
    x_var = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x_var).float(), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_var)
    flat = grad.flatten(1)
    if not bool(torch.isfinite(flat).all()):
        bad = int((~torch.isfinite(flat)).any(dim=1).sum())
        found.append(CheckWarning("nonfinite_gradient", f"the input gradient is NaN or inf for {bad} of "
                                                        f"{flat.shape[0]} samples"))
    zero = int((flat == 0).all(dim=1).sum())
    if zero:
        found.append(CheckWarning("zero_gradient", f"the input gradient is exactly zero for {zero} of {flat.shape[0]} "
                                                   "samples: the loss is saturated or the gradient is masked; use "
                                                   "the DLR loss (APGD-T), BPDA for non-differentiable layers, "
                                                   "or Square"))
    return found


def _probe_checks(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str,
                  generator: Optional[torch.Generator]) -> List[CheckWarning]:
    found: List[CheckWarning] = []
    count = x.shape[0]
    by_eps = {e: _sign_pgd_accuracy(model, x, y, e, norm, steps=10, step_size=2.5 * e / 10)
              for e in (eps / 4, eps / 2, eps)}
    finding = check_curve(by_eps, what="eps", count=count)
    if finding:
        found.append(finding)
    # a step of eps / 10: 5 steps reach half the ball, 25 steps all of it, so more steps must break more
    by_steps = {s: _sign_pgd_accuracy(model, x, y, eps, norm, steps=s, step_size=eps / 10) for s in (5, 25)}
    finding = check_curve(by_steps, what="steps", count=count)
    if finding:
        found.append(finding)
    white = APGD(model, eps=eps, norm=norm, steps=50).run(x, y, generator=generator)
    black = Square(model, eps=eps, norm=norm, queries=300).run(x, y, generator=generator)
    finding = check_black_box(1 - float(white.success.float().mean()), 1 - float(black.success.float().mean()),
                              count=count)
    if finding:
        found.append(finding)
    return found


def check_model(model: nn.Module, x: Tensor, y: Tensor, *, eps: Optional[float] = None, norm: str = "linf",
                max_samples: int = 64, generator: Optional[torch.Generator] = None,
                emit: bool = True) -> List[CheckWarning]:
    """Runs the checks of this module on (the first ``max_samples`` of) ``x`` ``[B, C, H, W]`` in [0, 1]
    with labels ``y``; returns the findings and, with ``emit``, also raises each as an
    :class:`EvaluationWarning`. With ``eps`` it also probes the attack curves (``rises_with_eps``,
    ``rises_with_steps``, ``black_box_stronger``) on the correctly classified samples; that costs about
    ``160`` forward-backward passes and 300 forwards of the batch. The model's modes are restored afterwards.

    Example::

        >>> for w in check_model(model, x, y, eps=8 / 255, emit=False):
        ...     print(w.code, w.message)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"check_model: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("check_model: x must be a floating-point [B, ...] tensor of images in [0, 1]")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        raise ValueError(f"check_model: y must be an integer [B] tensor with B = {x.shape[0]}")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0):
        raise ValueError(f"check_model: eps must be None or a number > 0, got {eps!r}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"check_model: norm must be 'linf' or 'l2', got {norm!r}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"check_model: max_samples must be an int >= 1, got {max_samples!r}")
    x, y = x[:max_samples].detach(), y[:max_samples].long()
    training = [name or type(m).__name__ for name, m in model.named_modules() if m.training]
    saved = _eval_mode(model)
    try:
        with torch.enable_grad():
            found = _static_checks(model, x, y, training)
            if eps is not None:
                with torch.no_grad():
                    correct = model(x).argmax(dim=1) == y
                if bool(correct.any()):
                    found += _probe_checks(model, x[correct], y[correct], float(eps), norm, generator)
    finally:
        _restore(saved)
    if emit:
        for finding in found:
            warnings.warn(f"{finding.code}: {finding.message}", EvaluationWarning, stacklevel=2)
    return found
