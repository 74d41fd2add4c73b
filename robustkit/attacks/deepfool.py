"""DeepFool (Moosavi-Dezfooli et al. 2016), batched, L2 and L-inf, untargeted and targeted.

Each iteration of the active batch is one forward pass, the gradients of all the candidates' logit
differences for the whole active batch (one backward per candidate over the shared graph: never one per
image, nor a forward per candidate), and one fused
:func:`robustkit.ops.deepfool_step`. Samples leave the active batch as soon as they are adversarial; their
result is scattered back into the full batch. With ``eot=n`` that forward is one of ``n`` copies of the active
batch and the linearisation is that of the expected logits (the mean of the copies' logits and gradients).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from robustkit.attacks.base import AttackOutput
from robustkit.attacks.restarts import MinimalNormSearch
from robustkit.ops import deepfool_step

_JACOBIANS = ("loop", "batched")


def candidate_classes(logits: Tensor, y: Tensor, candidates: Optional[int], owner: str = "DeepFool") -> Tensor:
    """The ``candidates - 1`` highest-scoring classes other than ``y`` given ``logits``, ``[B, K]`` (all other
    classes for ``candidates=None``): DeepFool's candidate set, also Deep Defense's."""
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"{owner}: the model must have at least 2 classes, got {num_classes}")
    count = num_classes if candidates is None else min(candidates, num_classes)
    others = logits.scatter(1, y.unsqueeze(1), float("-inf"))
    return others.topk(count - 1, dim=1).indices


class DeepFool(MinimalNormSearch):
    """DeepFool: iterate to the nearest boundary of the model's linearisation (Alg. 2 of the paper).

    Untargeted, per sample, the candidates are the ``candidates - 1`` classes other than ``y`` with the
    highest clean logits (the reference code's ``num_classes``). Each iteration linearises
    ``f_k = z_k - z_y`` at the current point, steps to the nearest linearised boundary (Eq. 8 for L2; the
    L-inf step ``(|f_l| + 1e-4) / ||w_l||_1 sign(w_l)``) and accumulates ``r_total``; the iterate is
    ``x + (1 + overshoot) * r_total`` clipped to [0, 1] (the overshoot as in the paper's code). Targeted
    (``target`` given, as Deep Defense's attack module does), the one candidate is the target ``t`` and
    ``f = z_t - max_{j != t} z_j`` is linearised against the class currently in the way.

    The result's ``extras["rho2"]`` is ``||adv - x||_2 / ||x||_2`` per sample, the term Deep Defense's
    robustness ρ₂ (Eq. 7) averages; ``steps`` counts the linearisations each sample used.

    Args:
        steps: the most iterations per sample.
        overshoot: the paper's η, 0.02.
        candidates: classes considered including the label (10 in the paper); ``None`` for all.
        norm: ``"l2"`` or ``"linf"``.
        jacobian: how the ``K`` candidate gradients are taken from the one forward pass. ``"loop"`` (default):
            one batch-wide backward per candidate over the retained graph. ``"batched"``: a single
            ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over one-hot cotangents). Both give
            bitwise-equal gradients; on the MNIST LeNet on CPU ``"loop"`` measured 1.3x faster, because
            vmap has no batching rule for conv and max-pool backward, falls back to a per-cotangent loop and
            then stacks K copies of every intermediate gradient (the ``jacobian=batched`` row of ``bench/minnorm.py``).
        eot, eot_batched: linearise the expected logits over ``eot`` stochastic forwards (randomized models);
            a sample stops when the expected logits are adversarial.
        restarts, restart_radius: further runs from random starts near ``x``, keeping per sample the smallest
            successful perturbation (:class:`robustkit.attacks.restarts.MinimalNormSearch`). From a start
            ``x0`` the iterate is ``x0 + (1 + overshoot) r_total``; norms are measured from ``x``.
        **options: the shared :class:`robustkit.attacks.AttackOptions` (``models``, ``amp``, ``batch_size``, ...).

    Example::

        >>> res = DeepFool(model).run(x, y)
        >>> rho2 = res.extras["rho2"].mean()          # Deep Defense's robustness measure
        >>> x_adv = DeepFool(model, norm="linf")(x, y, target="least_likely")
    """

    norms = ("l2", "linf")

    def __init__(self, model: Optional[nn.Module] = None, *, steps: int = 50, overshoot: float = 0.02,
                 candidates: Optional[int] = 10, norm: str = "l2", jacobian: str = "loop", eot: int = 1,
                 eot_batched: bool = True, restarts: int = 1, restart_radius: Optional[float] = None, **options):
        super().__init__(model, norm=norm, eot=eot, eot_batched=eot_batched, restarts=restarts,
                         restart_radius=restart_radius, **options)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"DeepFool: steps must be an int >= 1, got {steps!r}")
        if not isinstance(overshoot, (int, float)) or not overshoot >= 0:
            raise ValueError(f"DeepFool: overshoot must be a number >= 0, got {overshoot!r}")
        if candidates is not None and (isinstance(candidates, bool) or not isinstance(candidates, int)
                                       or candidates < 2):
            raise ValueError(f"DeepFool: candidates must be an int >= 2 (the label and at least one other class) "
                             f"or None, got {candidates!r}")
        if jacobian not in _JACOBIANS:
            raise ValueError(f"DeepFool: jacobian must be one of {_JACOBIANS}, got {jacobian!r}")
        self.steps, self.overshoot, self.candidates = steps, float(overshoot), candidates
        self.jacobian = jacobian

    def _attack_from(self, x: Tensor, y: Tensor, target: Optional[Tensor], start: Tensor,
                     generator: Optional[torch.Generator]) -> AttackOutput:
        batch = x.shape[0]
        steps_used = torch.zeros(batch, dtype=torch.int64, device=x.device)
        if batch == 0:
            return AttackOutput(adv=x.clone(), steps=steps_used, extras={"rho2": x.new_zeros(0)})
        classes = None  # [B, K] untargeted: from the first iteration's forward, at the start
        x_adv = start.clone()
        r_total = torch.zeros(batch, x[0].numel(), dtype=torch.float32, device=x.device)  # [B, D]
        active = torch.arange(batch, device=x.device)
        for it in range(self.steps):
            x_a = x_adv[active].requires_grad_(True)
            logits = self.expected_logits(x_a)  # [Ba, C]
            if it == 0:
                self.check_classes(logits.shape[1], y if target is None else target, target is not None)
            if target is None and classes is None:
                classes = self._candidate_classes(logits.detach(), y)
            pred = logits.argmax(dim=1)
            done = pred == target[active] if target is not None else pred != y[active]
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            num_candidates = 1 if classes is None else classes.shape[1]
            if (x_a.shape[0] - keep.numel()) * num_candidates > keep.numel():
                # Done samples would ride through all num_candidates backward passes; once they outweigh
                # one more forward of the others (backward costs at least a forward), re-run the forward
                # for the samples still to move (late iterations; 7 % of the run on the MNIST LeNet).
                active = active[keep]
                x_a = x_adv[active].requires_grad_(True)
                logits = self.expected_logits(x_a)
                keep = torch.arange(active.numel(), device=x.device)
            f, w = self._linearize(x_a, logits, keep, y[active], None if target is None else target[active],
                                   None if classes is None else classes[active])
            step = self._step(f, w)
            active = active[keep]
            r_total[active] += step
            moved = start[active] + (1 + self.overshoot) * r_total[active].view_as(x[active]).to(x.dtype)
            x_adv[active] = moved.clamp(0.0, 1.0)
            steps_used[active] += 1
        norms = (x_adv - x).flatten(1).norm(dim=1)
        rho2 = norms / x.flatten(1).norm(dim=1).clamp_min(1e-12)
        return AttackOutput(adv=x_adv, steps=steps_used, extras={"rho2": rho2})

    def _step(self, f: Tensor, w: Tensor) -> Tensor:
        """The fused linearisation step ``[Bk, D]`` (a method so that experiments can rescale it:
        ``bench/deepfool_bound.py``)."""
        step, _ = deepfool_step(f, w, norm=self.norm)
        return step

    def _candidate_classes(self, logits: Tensor, y: Tensor) -> Tensor:
        return candidate_classes(logits, y, self.candidates, "DeepFool")

    def _linearize(self, x_a: Tensor, logits: Tensor, keep: Tensor, y: Tensor, target: Optional[Tensor],
                   classes: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """``f [Bk, K]`` and ``w [Bk, K, D]`` of the samples ``keep`` from the retained graph of ``logits``."""
        if target is None:
            f_all = logits.gather(1, classes) - logits.gather(1, y.unsqueeze(1))  # [Ba, K]
        else:
            in_the_way = logits.detach().scatter(1, target.unsqueeze(1), float("-inf")).argmax(dim=1)
            f_all = logits.gather(1, target.unsqueeze(1)) - logits.gather(1, in_the_way.unsqueeze(1))  # [Ba, 1]
        f = f_all[keep]  # [Bk, K]
        if self.jacobian == "batched":
            # One-hot cotangents [K, Bk, K]: row k of the vmapped backward is the gradient of f[:, k].
            eye = torch.eye(f.shape[1], dtype=f.dtype, device=f.device)
            cotangents = eye.unsqueeze(1).expand(f.shape[1], f.shape[0], f.shape[1])
            (grads,) = torch.autograd.grad(f, x_a, grad_outputs=cotangents, is_grads_batched=True)  # [K, Ba, ...]
            return f.detach(), grads[:, keep].flatten(2).transpose(0, 1).to(f.dtype)
        w = torch.empty(f.shape[0], f.shape[1], x_a[0].numel(), dtype=f.dtype, device=f.device)  # [Bk, K, D]
        # One ordinary backward per candidate over the retained graph, written straight into w (see the
        # ``jacobian`` argument for why this is the default). Summing f[:, k] over the batch gives each sample
        # its own gradient: the samples are independent (the model is in eval mode).
        every_row = keep.numel() == x_a.shape[0]  # keep is then 0..Ba-1: skip the gather's extra copy
        for k in range(f.shape[1]):
            (grad,) = torch.autograd.grad(f[:, k].sum(), x_a, retain_graph=k < f.shape[1] - 1)  # [Ba, ...]
            w[:, k] = (grad if every_row else grad[keep]).flatten(1)
        return f.detach(), w
