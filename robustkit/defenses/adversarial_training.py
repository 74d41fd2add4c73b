"""Adversarial training objectives: Madry et al.'s PGD training and Goodfellow et al.'s mixed objective
(:class:`AdversarialTraining`), Wong et al.'s fast FGSM (:class:`FastAdversarialTraining`), Shafahi et al.'s free
training (:class:`FreeAdversarialTraining`), Zhang et al.'s TRADES (:class:`TRADES`), and a fixed adversarial
training set (:func:`adversarial_dataset`).

Each objective is ``objective(model, x, y) -> ObjectiveOutput`` and works in :func:`robustkit.training.fit` or
in the user's own loop::

    out = objective(model, x, y)
    optimizer.zero_grad(); out.loss.backward(); optimizer.step()

While adversarial examples are generated every module of the model is in eval mode (BatchNorm statistics are
used and left unchanged, dropout is off) and each module's mode is restored afterwards; ``attack_mode="train"``
attacks the model in the mode it is in. The example generation differentiates with respect to the input only,
so no parameter's ``.grad`` is written before the caller's backward.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Dict, Iterator, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from robustkit.ops import sign_momentum_step
from robustkit.training.objective import ObjectiveOutput, check_attack_mode, check_images, generation_mode, \
    unwrap_model


def _number(owner: str, name: str, value, *, low: float = 0.0, high: float = math.inf, strict_low=False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < low or value > high or (strict_low and value == low):
        bound = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f"{'>' if strict_low else '>='} {low:g}"
        raise ValueError(f"{owner}: {name} must be a number {bound}, got {value!r}")
    return float(value)


def _int(owner: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return value


class _Budgeted:
    """An objective whose perturbation budget (ε and the step size) ``fit(eps_warmup=...)`` scales down early
    in training (:mod:`robustkit.training.warmup`). ``budget_scale`` in (0, 1]; 1 is the budget the objective
    was built with, and it is what ``fit`` leaves behind."""

    _budget_scale = 1.0

    @property
    def budget_scale(self) -> float:
        return self._budget_scale

    @budget_scale.setter
    def budget_scale(self, value: float) -> None:
        self._budget_scale = _number(type(self).__name__, "budget_scale", value, high=1.0, strict_low=True)


@contextlib.contextmanager
def _scaled_attack(attack, scale: float) -> Iterator[None]:
    """``attack`` with its ε and step size multiplied by ``scale`` inside the block, restored after."""
    if scale == 1.0:
        yield
        return
    eps, rule = attack.eps, attack.rule
    attack.eps, attack.rule = eps * scale, dataclasses.replace(rule, step_size=rule.step_size * scale)
    try:
        yield
    finally:
        attack.eps, attack.rule = eps, rule


class AdversarialTraining(_Budgeted):
    """``α·CE(f(x), y) + (1 − α)·CE(f(x_adv), y)`` with ``x_adv = attack(x, y)`` and ``α = clean_weight``.

    ``clean_weight=0`` is Madry et al. 2018's saddle-point objective (their Eq. 2.1, the inner maximisation by
    PGD); ``clean_weight=0.5`` with :class:`robustkit.attacks.FGSM` is Goodfellow et al. 2015's adversarial
    objective (their Eq. 6, α = 0.5). The logits returned are those of ``x_adv``.

    Args:
        attack: a robustkit attack bound to the model being trained (or an ensemble that contains it).
        clean_weight: α in [0, 1].
        attack_mode: ``"eval"`` (default) or ``"train"``: the mode the model is attacked in.

    Example::

        >>> objective = AdversarialTraining(rk.attacks.PGD(model, eps=0.3, step_size=0.01, steps=40))
        >>> out = objective(model, x, y); out.loss.backward()
    """

    def __init__(self, attack, clean_weight: float = 0.0, *, attack_mode: str = "eval"):
        if not callable(attack) or not hasattr(attack, "models"):
            raise TypeError(f"AdversarialTraining: attack must be a robustkit attack (callable, with .models), "
                            f"got {type(attack).__name__}")
        self.attack = attack
        self.clean_weight = _number("AdversarialTraining", "clean_weight", clean_weight, high=1.0)
        self.attack_mode = check_attack_mode("AdversarialTraining", attack_mode)
        if attack_mode == "train" and getattr(attack, "attack_mode", "train") == "eval":
            raise ValueError("AdversarialTraining: attack_mode='train' needs an attack built with "
                             "attack_mode='train' (this attack switches the model to eval mode itself)")
        eps = getattr(attack, "eps", None)
        self.eps = float(eps) if eps is not None else None  # the overfitting guard's radius

    @_Budgeted.budget_scale.setter
    def budget_scale(self, value: float) -> None:
        if not (isinstance(getattr(self.attack, "eps", None), float) and hasattr(self.attack, "rule")):
            raise TypeError(f"AdversarialTraining: the budget of {type(self.attack).__name__} cannot be scaled "
                            "(only fixed-budget gradient attacks: FGSM, PGD, MI-FGSM)")
        _Budgeted.budget_scale.fset(self, value)

    def check_model(self, model: nn.Module) -> None:
        bare = unwrap_model(model)
        if not any(member is bare for member in self.attack.models):
            raise ValueError("AdversarialTraining: attack is bound to another model; build the attack with the "
                             "model being trained")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        self.check_model(model)
        alpha = self.clean_weight
        metrics: Dict[str, Tensor] = {}
        loss = x.new_zeros(())
        if alpha < 1:
            with generation_mode(unwrap_model(model), self.attack_mode), \
                    _scaled_attack(self.attack, self.budget_scale):
                x_adv = self.attack(x, y).detach()
            logits = model(x_adv)
            adv_loss = F.cross_entropy(logits, y)
            loss = (1 - alpha) * adv_loss
            metrics["adv_loss"] = adv_loss.detach()
        if alpha > 0:
            clean_logits = model(x)
            clean_loss = F.cross_entropy(clean_logits, y)
            loss = loss + alpha * clean_loss
            metrics["clean_loss"] = clean_loss.detach()
            if alpha == 1:
                logits = clean_logits
        return ObjectiveOutput(loss=loss, logits=logits, metrics=metrics)

    def __repr__(self) -> str:
        return f"AdversarialTraining({self.attack!r}, clean_weight={self.clean_weight:g}, " \
               f"attack_mode={self.attack_mode!r})"


class FastAdversarialTraining(_Budgeted):
    """Fast adversarial training (Wong, Rice and Kolter 2020, Algorithm 3): FGSM from a uniform random start,
    ``δ ~ U(−ε, ε)^d``, ``δ ← clip_ε(δ + α·sign(∇_δ CE(f(x + δ), y)))``, then CE on ``x + δ`` clipped to [0, 1].

    ``step_size`` α defaults to 1.25·ε, the paper's choice. As in the paper's algorithm and its MNIST code, the
    random start is not clipped to [0, 1] before the gradient is taken (``start_in_box=True`` clips it, as their
    CIFAR-10 code does). This matters: on MNIST, whose background is 0, a clipped start makes every background
    pixel end at +ε after the step, a stronger and less random perturbation that drove our MNIST run into
    catastrophic overfitting (docs/adversarial-training.md).

    ``fit`` runs its catastrophic-overfitting guard for this objective (``guard_overfitting``): PGD accuracy on
    a fixed batch after every epoch, stopping and restoring the best weights when it collapses.

    Example::

        >>> history = rk.training.fit(model, train, FastAdversarialTraining(eps=0.3), epochs=10, schedule="cyclic")
    """

    guard_overfitting = True

    def __init__(self, eps: float, step_size: Optional[float] = None, *, start_in_box: bool = False,
                 attack_mode: str = "eval"):
        self.eps = _number("FastAdversarialTraining", "eps", eps)
        self.step_size = 1.25 * self.eps if step_size is None else \
            _number("FastAdversarialTraining", "step_size", step_size)
        if not isinstance(start_in_box, bool):
            raise TypeError(f"FastAdversarialTraining: start_in_box must be a bool, got {type(start_in_box).__name__}")
        self.start_in_box = start_in_box
        self.attack_mode = check_attack_mode("FastAdversarialTraining", attack_mode)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The FGSM example from a random start (detached), the model in the mode ``attack_mode`` asks for."""
        bare = unwrap_model(model)
        eps, step_size = self.eps * self.budget_scale, self.step_size * self.budget_scale
        with generation_mode(bare, self.attack_mode):
            delta = torch.empty_like(x).uniform_(-eps, eps)
            if self.start_in_box:
                delta = (x + delta).clamp_(0.0, 1.0).sub_(x)
            x_start = (x + delta).requires_grad_(True)
            loss = F.cross_entropy(bare(x_start).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_start)
            x_adv = x_start.detach()
            with torch.no_grad():   # x + clip_eps(delta + alpha sign(grad)), then the [0, 1] box
                sign_momentum_step(x_adv, x, grad, None, step_size=step_size, eps=eps, decay=0.0,
                                   grad_norm="none", norm="linf")
        return x_adv

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        x_adv = self.perturb(model, x, y)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        return ObjectiveOutput(loss=loss, logits=logits, metrics={})

    def __repr__(self) -> str:
        return f"FastAdversarialTraining(eps={self.eps:g}, step_size={self.step_size:g}, " \
               f"start_in_box={self.start_in_box}, attack_mode={self.attack_mode!r})"


class FreeAdversarialTraining:
    """Free adversarial training (Shafahi et al. 2019, Algorithm 1): each batch is replayed ``replays`` = m
    times; every replay's single backward gives the weight gradient (the optimizer steps on it) and the
    perturbation's gradient, ``δ ← clip_ε(δ + step_size·sign(∇_δ))``. ``δ`` starts at 0 and carries over from
    one batch to the next, as in the paper. ``step_size`` defaults to ε (the paper's choice).

    The replays train on ``x + δ`` in the model's training mode: the same forward serves the weights and the
    perturbation, which is what makes it free, so there is no separate example generation to put in eval mode.

    In :func:`robustkit.training.fit` the m optimizer steps per batch come from :meth:`passes`; divide the
    epochs by m to keep the paper's budget. In a loop of your own::

        for _ in range(objective.replays):
            out = objective(model, x, y)      # applies the previous backward's perturbation gradient first
            optimizer.zero_grad(); out.loss.backward(); optimizer.step()
    """

    def __init__(self, eps: float, replays: int = 4, *, step_size: Optional[float] = None):
        self.eps = _number("FreeAdversarialTraining", "eps", eps)
        self.replays = _int("FreeAdversarialTraining", "replays", replays)
        self.step_size = self.eps if step_size is None else _number("FreeAdversarialTraining", "step_size", step_size)
        self._delta: Optional[Tensor] = None     # [B_max, ...] the perturbation carried between batches
        self._pending: Optional[Tensor] = None   # the leaf of the last call, whose .grad the caller's backward fills

    @property
    def passes_per_batch(self) -> int:
        return self.replays

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.grad is None:
            raise RuntimeError("FreeAdversarialTraining: call loss.backward() on each output before the next call "
                               "(the perturbation steps on the gradient that backward leaves)")
        with torch.no_grad():
            rows = pending.shape[0]
            self._delta[:rows] = (pending + self.step_size * pending.grad.sign()).clamp_(-self.eps, self.eps)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        self._apply_pending()
        batch = x.shape[0]
        if self._delta is None or self._delta.shape[1:] != x.shape[1:] or self._delta.shape[0] < batch \
                or self._delta.device != x.device or self._delta.dtype != x.dtype:
            grown = torch.zeros_like(x)
            if self._delta is not None and self._delta.shape[1:] == x.shape[1:]:
                keep = min(self._delta.shape[0], batch)
                grown[:keep] = self._delta[:keep].to(grown)
            self._delta = grown
        delta = self._delta[:batch].clone().requires_grad_(True)
        logits = model((x + delta).clamp(0.0, 1.0))
        loss = F.cross_entropy(logits, y)
        self._pending = delta
        return ObjectiveOutput(loss=loss, logits=logits, metrics={})

    def passes(self, model: nn.Module, x: Tensor, y: Tensor) -> Iterator[ObjectiveOutput]:
        """The m replays of one batch; the caller runs backward and the optimizer step after each."""
        for _ in range(self.replays):
            yield self(model, x, y)
        self._apply_pending()

    def state_dict(self) -> Dict[str, Optional[Tensor]]:
        """The carried perturbation, so that a resumed run continues with it."""
        self._apply_pending()
        return {"delta": None if self._delta is None else self._delta.detach().clone()}

    def load_state_dict(self, state: Dict[str, Optional[Tensor]]) -> None:
        self._pending = None
        self._delta = state["delta"]

    def __repr__(self) -> str:
        return f"FreeAdversarialTraining(eps={self.eps:g}, replays={self.replays}, step_size={self.step_size:g})"


class TRADES(_Budgeted):
    """TRADES (Zhang et al. 2019, Eq. 5): ``CE(f(x), y) + β·KL(p(x) ‖ p(x'))`` with
    ``x' = argmax_{‖x' − x‖∞ ≤ ε} KL(p(x) ‖ p(x'))``, the inner maximisation by ``attack_steps`` sign-gradient
    steps of ``step_size`` from ``x + 0.001·N(0, I)`` (their Algorithm 1 and code), each projected onto the
    ε-ball and [0, 1]; ``p`` is the softmax. The KL term is averaged over the batch; its gradient reaches the
    weights through both ``f(x)`` and ``f(x')``. The logits returned are those of ``x'``.

    The inner step needs only the KL's gradient with respect to the logits of ``x'``, ``softmax(f(x')) − p(x)``
    (per sample), so it is fed straight into the input backward instead of building the loss's graph.

    Example::

        >>> objective = TRADES(attack_steps=10, beta=6.0, eps=8 / 255, step_size=2 / 255)
    """

    def __init__(self, attack_steps: int = 10, beta: float = 6.0, *, eps: float = 0.031, step_size: float = 0.007,
                 start_std: float = 0.001, attack_mode: str = "eval"):
        self.attack_steps = _int("TRADES", "attack_steps", attack_steps)
        self.beta = _number("TRADES", "beta", beta)
        self.eps = _number("TRADES", "eps", eps)
        self.step_size = _number("TRADES", "step_size", step_size)
        self.start_std = _number("TRADES", "start_std", start_std)
        self.attack_mode = check_attack_mode("TRADES", attack_mode)

    def perturb(self, model: nn.Module, x: Tensor) -> Tensor:
        """The inner maximisation's ``x'`` (detached), with ``model`` in the mode ``attack_mode`` asks for."""
        bare = unwrap_model(model)
        eps, step_size = self.eps * self.budget_scale, self.step_size * self.budget_scale
        with generation_mode(bare, self.attack_mode):
            with torch.no_grad():
                p_natural = F.softmax(bare(x).float(), dim=1)
            noise = torch.randn(x.shape, device=x.device, dtype=x.dtype)
            x_adv = (x + self.start_std * noise).clamp_(0.0, 1.0)
            for _ in range(self.attack_steps):
                x_var = x_adv.detach().requires_grad_(True)
                logits = bare(x_var)
                # d/dz sum_i KL(p_i || softmax(z_i)) = softmax(z) - p, per row
                grad_logits = F.softmax(logits.detach().float(), dim=1).sub_(p_natural).to(logits.dtype)
                (grad,) = torch.autograd.grad(logits, x_var, grad_outputs=grad_logits)
                with torch.no_grad():
                    sign_momentum_step(x_adv, x, grad, None, step_size=step_size, eps=eps, decay=0.0,
                                       grad_norm="none", norm="linf")
        return x_adv.detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        x_adv = self.perturb(model, x)
        natural_logits = model(x)
        adv_logits = model(x_adv)
        natural_loss = F.cross_entropy(natural_logits, y)
        robust_kl = F.kl_div(F.log_softmax(adv_logits, dim=1), F.log_softmax(natural_logits, dim=1),
                             reduction="batchmean", log_target=True)
        loss = natural_loss + self.beta * robust_kl
        return ObjectiveOutput(loss=loss, logits=adv_logits,
                               metrics={"natural_loss": natural_loss.detach(), "robust_kl": robust_kl.detach()})

    def __repr__(self) -> str:
        return (f"TRADES(attack_steps={self.attack_steps}, beta={self.beta:g}, eps={self.eps:g}, "
                f"step_size={self.step_size:g}, start_std={self.start_std:g}, attack_mode={self.attack_mode!r})")


def adversarial_dataset(attack, data, *, batch_size: int = 500, include_clean: bool = False,
                        progress: bool = False) -> TensorDataset:
    """A fixed adversarial training set: ``attack`` run once over ``data`` (a Dataset of ``(image, label)`` or an
    ``(images, labels)`` tuple), with the model in eval mode; labels are the true labels. Deep Defense's
    "Adv. Train I" is this set made by DeepFool, concatenated with the clean set (``include_clean=True``
    returns that concatenation, clean images first).

    Example::

        >>> adv_train = adversarial_dataset(rk.attacks.DeepFool(model), mnist_train, include_clean=True)
        >>> rk.training.fit(fresh_model, adv_train, epochs=5)
    """
    if not callable(attack) or not hasattr(attack, "models"):
        raise TypeError(f"adversarial_dataset: attack must be a robustkit attack, got {type(attack).__name__}")
    _int("adversarial_dataset", "batch_size", batch_size)
    if isinstance(data, tuple) and len(data) == 2:
        data = TensorDataset(*data)
    if not isinstance(data, Dataset):
        raise TypeError(f"adversarial_dataset: data must be a Dataset or an (images, labels) tuple, "
                        f"got {type(data).__name__}")
    images, labels, adversarial = [], [], []
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc=f"adversarial_dataset {type(attack).__name__}", disable=not progress):
        index = torch.arange(start, min(start + batch_size, len(data)))
        try:
            x, y = data[index]
        except (TypeError, IndexError, ValueError):
            pairs = [data[int(i)] for i in index]
            x = torch.stack([p[0] for p in pairs])
            y = torch.as_tensor([int(p[1]) for p in pairs], dtype=torch.int64)
        check_images("adversarial_dataset", x, "data")
        device = next(attack.model.parameters()).device
        x, y = x.to(device), y.to(device)
        with contextlib.ExitStack() as modes:
            for member in attack.models:
                modes.enter_context(generation_mode(member, "eval"))
            adversarial.append(attack(x, y).detach().cpu())
        images.append(x.cpu())
        labels.append(y.cpu())
    adv = torch.cat(adversarial)
    y_all = torch.cat(labels)
    if include_clean:
        return TensorDataset(torch.cat([torch.cat(images), adv]), torch.cat([y_all, y_all]))
    return TensorDataset(adv, y_all)


__all__ = ["AdversarialTraining", "FastAdversarialTraining", "FreeAdversarialTraining", "TRADES",
           "adversarial_dataset"]
