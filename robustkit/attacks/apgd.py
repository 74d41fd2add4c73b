"""Auto-PGD (Croce and Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"): APGD-CE, APGD-DLR and the targeted APGD-T of AutoAttack."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from robustkit.attacks._apgd_core import apgd, random_start
from robustkit.attacks.base import AttackOutput, FixedBudgetAttack
from robustkit.attacks.dlr import LOSSES, check_classes, check_label_range
from robustkit.attacks.eot import check_eot
from robustkit.attacks.restarts import check_restarts

#: the most rows one APGD-T call attacks (its targets are batched up to this)
_TARGET_ROWS = 4096


def top_other_classes(logits: Tensor, y: Tensor, count: int) -> Tensor:
    """``[B, count]`` the ``count`` classes other than ``y`` with the highest ``logits``, best first."""
    others = logits.detach().scatter(1, y.unsqueeze(1), float("-inf"))
    return others.topk(count, dim=1).indices


class APGD(FixedBudgetAttack):
    """Auto-PGD, Algorithm 1 of the paper: momentum ``alpha = 0.75``, step size ``η(0) = 2 eps`` halved at the
    checkpoints ``w_j = ceil(p_j * steps)`` (Sec. 3.2) when fewer than ``rho`` of the steps since the last
    checkpoint raised the loss (Condition 1) or when neither the step size nor the best loss changed
    (Condition 2), each halving restarting from the best point found so far.

    Args:
        eps, norm: the ball, ``"linf"`` or ``"l2"``.
        steps: iterations per run (the paper's ``N_iter``; 100 in AutoAttack).
        restarts: runs from independent random starts; each restart attacks only the samples not yet broken.
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (Difference of Logits Ratio, Eq. 5; needs >= 3 classes).
        target: ``None`` for the untargeted loss, or ``n`` for APGD-T: the targeted loss toward each of the
            ``n`` highest-scoring other classes of the clean input in turn (AutoAttack uses 9 with the targeted
            DLR), each on the samples no earlier target broke; success is any misclassification. An explicit
            ``target`` tensor passed to :meth:`run` instead attacks toward it and counts reaching it.
        eot: average the gradient over ``eot`` stochastic forwards per step (:mod:`robustkit.attacks.eot`).
        eot_batched: the EOT copies go through the model as one batch (``False``: one forward per copy, for
            models that draw one random transformation per call).
        rho: the fraction of Condition 1 (0.75).
        early_stop: drop samples from the active batch once misclassified (same result, less work). With
            ``eot > 1`` every sample runs all steps and the result is its highest expected-loss point
            ``x_max``: one misclassified draw of a randomized model is no success.
        seed and the other shared options: :class:`robustkit.attacks.base.AttackOptions`.

    ``extras["loss"]`` holds the best loss reached (``f_max``) for the samples not broken; ``steps`` the
    iterations each sample used over all restarts and targets.

    Example::

        >>> res = APGD(model, eps=8 / 255).run(x, y)                    # APGD-CE
        >>> res = APGD(model, eps=8 / 255, loss="dlr", target=9).run(x, y)  # APGD-T
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, norm: str = "linf",
                 steps: int = 100, restarts: int = 1, loss: str = "ce", target: Optional[int] = None,
                 eot: int = 1, eot_batched: bool = True, rho: float = 0.75, early_stop: bool = True,
                 seed: Optional[int] = 0, **options):
        super().__init__(model, eps=eps, norm=norm, seed=seed, **options)
        name = type(self).__name__
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{name}: steps must be an int >= 1, got {steps!r}")
        if loss not in LOSSES:
            raise ValueError(f"{name}: loss must be one of {LOSSES}, got {loss!r}")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 1):
            raise ValueError(f"{name}: target must be None (untargeted) or the number of target classes >= 1, "
                             f"got {target!r}")
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 <= rho <= 1.0:
            raise ValueError(f"{name}: rho must be a number in [0, 1], got {rho!r}")
        for flag, value in (("eot_batched", eot_batched), ("early_stop", early_stop)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: {flag} must be a bool, got {type(value).__name__}")
        self.steps, self.loss, self.target_classes = steps, loss, target
        self.restarts = check_restarts(name, restarts)
        self.eot = check_eot(name, eot)
        self.eot_batched, self.rho, self.early_stop = eot_batched, float(rho), early_stop

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(eps={self.eps:.6g}, norm={self.norm!r}, steps={self.steps}, "
                f"restarts={self.restarts}, loss={self.loss!r}, target={self.target_classes}, eot={self.eot})")

    def _attack(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                generator: Optional[torch.Generator]) -> AttackOutput:
        batch = x.shape[0]
        steps = torch.zeros(batch, dtype=torch.int64, device=x.device)
        best = torch.full((batch,), float("-inf"), dtype=x.dtype, device=x.device)
        if batch == 0:
            return AttackOutput(adv=x.clone(), steps=steps, extras={"loss": best})
        with torch.no_grad():
            clean = self.logits(x)
        num_classes = clean.shape[1]
        check_label_range(type(self).__name__, num_classes, y, target)
        targeted_success = target is not None
        if target is not None:
            goals = [target]
        elif self.target_classes is not None:
            count = min(self.target_classes, num_classes - 1)
            goals = list(top_other_classes(clean, y, count).unbind(1))
        else:
            goals = [None]
        check_classes(type(self).__name__, self.loss, num_classes, goals[0] is not None)
        adv = x.clone()
        broken = (clean.argmax(1) == target) if targeted_success else (clean.argmax(1) != y)
        for _ in range(self.restarts):
            # the targets as one batch of len(goals) * n rows (in slices of at most _TARGET_ROWS rows), a
            # sample's rows leaving together once one succeeds: the same attack as target after target on the
            # samples still robust, in fewer, larger forwards
            first = 0
            while first < len(goals):
                todo = (~broken).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                chunk = goals[first:first + max(1, _TARGET_ROWS // todo.numel())]
                first += len(chunk)
                rows = todo.repeat(len(chunk))  # [G * n] copy-major: target g of sample todo[i] is row g*n + i
                goal_rows = None if chunk[0] is None else torch.cat([g[todo] for g in chunk])
                start = random_start(x[rows], self.eps, self.norm, generator)
                run = apgd(self.logits, x[rows], y[rows], start, eps=self.eps, norm=self.norm, steps=self.steps,
                           loss=self.loss, target=goal_rows, targeted_success=targeted_success, eot=self.eot,
                           eot_batched=self.eot_batched, rho=self.rho, early_stop=self.early_stop,
                           return_best=self.eot > 1,
                           groups=torch.arange(todo.numel(), device=x.device).repeat(len(chunk))
                           if len(chunk) > 1 else None)
                steps.index_add_(0, rows, run.steps)
                # per row in target order: a success beats any loss; else the highest loss so far
                for g in range(len(chunk)):
                    part = slice(g * todo.numel(), (g + 1) * todo.numel())
                    ok, loss_g = run.success[part] & ~broken[todo], run.best_loss[part]
                    better = ok | (~broken[todo] & (loss_g > best[todo]))
                    adv[todo[better]] = run.adv[part][better]
                    best[todo[better]] = loss_g[better]
                    broken[todo[ok]] = True
        return AttackOutput(adv=adv, steps=steps, extras={"loss": best})


class APGDT(APGD):
    """APGD-T as AutoAttack runs it: the targeted DLR loss toward each of the ``target`` (9) highest-scoring
    other classes in turn. Same arguments as :class:`APGD`."""

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, norm: str = "linf",
                 steps: int = 100, restarts: int = 1, target: int = 9, **kwargs):
        super().__init__(model, eps=eps, norm=norm, steps=steps, restarts=restarts, loss="dlr", target=target,
                         **kwargs)
