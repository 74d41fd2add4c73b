"""Logit pairing and logit squeezing (Kannan, Kurakin and Goodfellow 2018, "Adversarial Logit Pairing").

Three penalties on the logits ``f(x)``, each with its own weight, any subset on at once:

- adversarial logit pairing (ALP): ``λ_alp · mean_i ||f(x_i) − f(x̃_i)||²`` between each clean image and its
  adversarial counterpart ``x̃_i``, added to the adversarial-training loss;
- clean logit pairing (CLP): ``λ_clp · (2/m) Σ_{i=1}^{m/2} ||f(x_π(i)) − f(x_π(i+m/2))||²`` over random pairs of
  clean images of the batch (``π`` a random permutation: the seed's ``m/2`` pairing of a shuffled batch);
- clean logit squeezing: ``λ_sq · mean_i ||f(x_i)||²``.

``||·||²`` is the squared L2 norm over the classes, averaged over the batch (or the pairs). Kannan et al.'s
TensorFlow code divides once more by the number of classes (``tf.losses.mean_squared_error``); their λ is then
``num_classes`` times ours.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from robustkit.training.objective import ObjectiveOutput, check_attack_mode, check_images, generation_mode, \
    unwrap_model

AttackFn = Callable[[Tensor, Tensor], Tensor]


def _check_weight(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"LogitPairing: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def squared_distance(a: Tensor, b: Tensor) -> Tensor:
    """``[B]``: ``||a_i − b_i||²`` over the class dimension."""
    return (a - b).pow(2).sum(dim=1)


def random_pairs(batch: int, *, generator: Optional[torch.Generator] = None,
                 device: Optional[torch.device] = None) -> tuple[Tensor, Tensor]:
    """Two index tensors of ``batch // 2`` disjoint random pairs: a random permutation of the batch split into
    halves (with an odd batch, one image sits out)."""
    perm = torch.randperm(batch, generator=generator, device="cpu")
    half = batch // 2
    perm = perm.to(device) if device is not None else perm
    return perm[:half], perm[half:2 * half]


class LogitPairing:
    """Adversarial logit pairing, clean logit pairing and clean logit squeezing as a training objective.

    Args:
        attack: makes the adversarial images: a robustkit attack bound to the model being trained (or any
            callable ``attack(x, y) -> x_adv``). ``None``: train on clean images only, for CLP and squeezing
            as Kannan et al. use them.
        adversarial: λ of ALP (needs an ``attack``).
        clean: λ of CLP.
        squeeze: λ of clean logit squeezing.
        clean_weight: with an attack, the base loss is ``clean_weight · CE(f(x), y) + (1 − clean_weight) ·
            CE(f(x̃), y)``; the default 0.5 is Kannan et al.'s mixed minibatch. Without an attack the base loss
            is ``CE(f(x), y)`` and ``clean_weight`` must be left unset.
        attack_mode: ``"eval"`` (default): the model is in eval mode while the attack runs (BatchNorm statistics
            frozen, dropout off); ``"train"``: attacked as it trains.
        generator: the random pairing's generator (default: torch's global one).

    The returned ``logits`` are those of the adversarial images when there is an attack, else the clean ones.
    ``metrics`` hold the unweighted terms: ``clean_ce``, ``adv_ce``, ``alp`` (mean squared clean/adversarial
    logit distance, reported whenever there is an attack), ``clp``, ``squeeze``.

    Example::

        >>> attack = rk.attacks.PGD(model, eps=0.3, step_size=0.01, steps=40)
        >>> alp = LogitPairing(attack, adversarial=0.5)                 # ALP on a 50/50 mixed minibatch
        >>> clp = LogitPairing(None, clean=0.5, squeeze=0.05)           # clean-only CLP with squeezing
        >>> out = alp(model, x, y); out.loss.backward()
    """

    def __init__(self, attack: Optional[AttackFn] = None, *, adversarial: float = 0.0, clean: float = 0.0,
                 squeeze: float = 0.0, clean_weight: Optional[float] = None, attack_mode: str = "eval",
                 generator: Optional[torch.Generator] = None):
        if attack is not None and not callable(attack):
            raise TypeError(f"LogitPairing: attack must be an attack (callable (x, y) -> x_adv) or None, "
                            f"got {type(attack).__name__}")
        self.attack = attack
        self.adversarial = _check_weight("adversarial", adversarial)
        self.clean = _check_weight("clean", clean)
        self.squeeze = _check_weight("squeeze", squeeze)
        if attack is None and self.adversarial > 0:
            raise ValueError("LogitPairing: adversarial (ALP) needs an attack; pass attack=... or adversarial=0")
        if attack is None and clean_weight is not None:
            raise ValueError("LogitPairing: clean_weight applies only with an attack (without one the loss is the "
                             "clean cross-entropy)")
        if clean_weight is None:
            clean_weight = 0.5
        if isinstance(clean_weight, bool) or not isinstance(clean_weight, (int, float)) or \
                not 0 <= clean_weight <= 1:
            raise ValueError(f"LogitPairing: clean_weight must be a number in [0, 1], got {clean_weight!r}")
        self.clean_weight = float(clean_weight)
        self.attack_mode = check_attack_mode("LogitPairing", attack_mode)
        self.generator = generator

    def check_model(self, model: nn.Module) -> None:
        """A robustkit attack must be bound to the model being trained (else it attacks a stale copy)."""
        members = getattr(self.attack, "models", None)
        bare = unwrap_model(model)
        if members is not None and not any(member is bare for member in members):
            raise ValueError("LogitPairing: attack is bound to another model; build the attack with the model "
                             "being trained")

    def adversarial_images(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        self.check_model(model)
        with generation_mode(unwrap_model(model), self.attack_mode):
            x_adv = self.attack(x, y)
        return x_adv.detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        check_images("LogitPairing", x)
        metrics = {}
        x_adv = self.adversarial_images(model, x, y) if self.attack is not None else None
        clean_logits = model(x)
        clean_ce = nn.functional.cross_entropy(clean_logits, y)
        metrics["clean_ce"] = clean_ce.detach()
        if x_adv is None:
            loss, logits = clean_ce, clean_logits
        else:
            logits = model(x_adv)
            adv_ce = nn.functional.cross_entropy(logits, y)
            metrics["adv_ce"] = adv_ce.detach()
            loss = self.clean_weight * clean_ce + (1 - self.clean_weight) * adv_ce
            alp = squared_distance(clean_logits, logits).mean()
            metrics["alp"] = alp.detach()
            if self.adversarial > 0:
                loss = loss + self.adversarial * alp
        if self.clean > 0:
            first, second = random_pairs(x.shape[0], generator=self.generator, device=x.device)
            clp = squared_distance(clean_logits[first], clean_logits[second]).mean() if len(first) else \
                clean_logits.new_zeros(())
            metrics["clp"] = clp.detach()
            loss = loss + self.clean * clp
        if self.squeeze > 0:
            squeeze = clean_logits.pow(2).sum(dim=1).mean()
            metrics["squeeze"] = squeeze.detach()
            loss = loss + self.squeeze * squeeze
        return ObjectiveOutput(loss=loss, logits=logits, metrics=metrics)

    def __repr__(self) -> str:
        parts = [f"adversarial={self.adversarial}", f"clean={self.clean}", f"squeeze={self.squeeze}"]
        if self.attack is not None:
            parts.insert(0, f"attack={type(self.attack).__name__}")
            parts.append(f"clean_weight={self.clean_weight}")
        return f"LogitPairing({', '.join(parts)})"


__all__ = ["LogitPairing", "random_pairs", "squared_distance"]
