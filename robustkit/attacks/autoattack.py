"""AutoAttack (Croce and Hein 2020): a fixed, parameter-free ensemble of attacks run in sequence, each only on the
samples that every earlier attack failed to break, so that a robust-accuracy number does not depend on tuning."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from robustkit.attacks.apgd import APGD
from robustkit.attacks.base import Attack, AttackOutput, FixedBudgetAttack
from robustkit.attacks.eot import logit_draws
from robustkit.attacks.fab import FAB
from robustkit.attacks.square import Square, margin

VERSIONS = ("standard", "rand", "fast")
#: the EOT draws of the "rand" suite: each step's gradient, and the judgement of each stage's points
RAND_EOT = 20
# a found perturbation counts if its norm is within eps up to float rounding of the projection
_NORM_SLACK = 1e-6


class AutoAttack(FixedBudgetAttack):
    """The AutoAttack suites, untargeted.

    * ``"standard"``: APGD-CE (100 steps), APGD-T (targeted DLR toward each of the 9 highest-scoring other
      classes, 100 steps each), FAB-T (9 targets, 100 steps) and Square (5000 queries), the configuration
      RobustBench reports.
    * ``"rand"``: APGD-CE and APGD-DLR with EOT over 20 forwards per step, for randomized defenses.
    * ``"fast"``: APGD-CE and APGD-T only (the two that break nearly every sample the full suite breaks).

    Each attack runs only on the samples still robust after the earlier ones, and every attack drops
    samples from its own active batch once broken, which is where most of the speed comes from. A sample
    counts as broken when the model misclassifies an image within ``eps`` of it; for ``"rand"`` when the mean
    logits over 20 fresh draws misclassify it (one lucky draw is no success).

    The returned image of a broken sample is the breaking attack's; of a sample no attack broke, the point
    with the lowest margin ``z_y - max_{j != y} z_j`` (of the mean logits over 20 draws for ``"rand"``) among
    the clean image and every attack's result, as APGD returns its highest-loss point: for a randomized model
    that point still fools some draws. ``run``'s logits (and so its ``success``) are those judging logits, and
    ``1 - success.mean()`` is the suite's robust accuracy. For ``"rand"`` that is not the same number as the
    per-draw accuracy of fresh forwards on the returned images: a sample whose mean logits are wrong already
    on the clean image counts as broken and is returned unattacked, yet some single draws still classify it
    correctly (on a randomized CIFAR-10 CNN, 16% robust by the suite's count and 27.6% per-draw on its
    returned images, where PGD-40 without EOT leaves 14%). Report the suite's count, or the per-sample worst
    case over attacks.

    ``extras["stage"]`` says which attack broke each sample: ``0`` misclassified clean, ``k`` the k-th
    attack of :attr:`stage_names` (1-based), ``-1`` robust. :attr:`last_counts` holds, after each call, the
    robust count after the clean check and after each attack.

    Args:
        eps, norm: the threat model (``"linf"`` or ``"l2"``).
        version: ``"standard"``, ``"rand"`` or ``"fast"``.
        seed and the shared options: :class:`robustkit.attacks.base.AttackOptions` (passed to every attack).

    Example::

        >>> res = AutoAttack(model, eps=8 / 255).run(x, y)
        >>> robust_accuracy = 1 - res.success.float().mean()
    """

    supports_targeted = False

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, norm: str = "linf",
                 version: str = "standard", seed: Optional[int] = 0, **options):
        super().__init__(model, eps=eps, norm=norm, seed=seed, **options)
        if version not in VERSIONS:
            raise ValueError(f"AutoAttack: version must be one of {VERSIONS}, got {version!r}")
        self.version = version
        shared = dict(options)
        shared.pop("seed", None)
        self.attacks: List[Tuple[str, Attack]] = self._suite(self.ensemble, shared)

    @property
    def stage_names(self) -> List[str]:
        return [name for name, _ in self.attacks]

    def _suite(self, model: nn.Module, shared: dict) -> List[Tuple[str, Attack]]:
        eps, norm = self.eps, self.norm
        if self.version == "rand":
            return [("apgd-ce", APGD(model, eps=eps, norm=norm, steps=100, loss="ce", eot=RAND_EOT, **shared)),
                    ("apgd-dlr", APGD(model, eps=eps, norm=norm, steps=100, loss="dlr", eot=RAND_EOT, **shared))]
        suite: List[Tuple[str, Attack]] = [
            ("apgd-ce", APGD(model, eps=eps, norm=norm, steps=100, loss="ce", **shared)),
            ("apgd-t", APGD(model, eps=eps, norm=norm, steps=100, loss="dlr", target=9, **shared))]
        if self.version == "standard":
            suite += [("fab-t", FAB(model, norm=norm, steps=100, target=9, eps=eps, **shared)),
                      ("square", Square(model, eps=eps, norm=norm, queries=5000, p_init=0.8, **shared))]
        return suite

    def __repr__(self) -> str:
        return f"AutoAttack(eps={self.eps:.6g}, norm={self.norm!r}, version={self.version!r})"

    def _attack(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                generator: Optional[torch.Generator]) -> AttackOutput:
        batch = x.shape[0]
        adv = x.clone()
        steps = torch.zeros(batch, dtype=torch.int64, device=x.device)
        stage = torch.full((batch,), -1, dtype=torch.int64, device=x.device)
        if batch == 0:
            self.last_counts = [0] * (len(self.attacks) + 1)
            return AttackOutput(adv=adv, steps=steps, extras={"stage": stage})
        with torch.no_grad():
            judged = self._judging_logits(x)  # [B, C] the logits of each sample's current point
        stage[judged.argmax(dim=1) != y] = 0
        lowest = margin(judged, y, None)  # [B] the margin of each sample's current point
        counts = [int((stage < 0).sum())]
        for index, (name, attack) in enumerate(self.attacks, start=1):
            todo = (stage < 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                counts.append(0)
                continue
            res = attack.run(x[todo], y[todo], generator=generator)
            size = res.linf if self.norm == "linf" else res.l2
            inside = size <= self.eps + _NORM_SLACK
            if self.version == "rand":
                with torch.no_grad():
                    logits = self._judging_logits(res.adv)
            else:
                logits = res.logits
            found = margin(logits, y[todo], None)
            better = inside & (found < lowest[todo])  # a broken point (margin < 0) is always better
            rows = todo[better]
            adv[rows], lowest[rows], judged[rows] = res.adv[better], found[better], logits[better]
            stage[todo[inside & (logits.argmax(dim=1) != y[todo])]] = index
            steps[todo] += res.steps
            counts.append(int((stage < 0).sum()))
        self.last_counts = counts
        return AttackOutput(adv=adv, steps=steps, extras={"stage": stage}, logits=judged)

    def _judging_logits(self, x: Tensor) -> Tensor:
        """The logits a point is judged by: one forward, or for ``"rand"`` the mean over 20 draws."""
        if self.version != "rand":
            return self.logits(x)
        return logit_draws(self.logits, x, RAND_EOT).mean(dim=0)
