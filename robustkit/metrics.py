"""Robustness metrics computed from per-sample predictions and perturbation norms: plain functions that every
layer may use (the evaluation runner, the defenses, the user's own loop).

All functions take 1-D tensors over the evaluated images (``y`` the true labels, ``clean_pred`` and
``adv_pred`` the predicted classes on clean and adversarial inputs) and return Python floats or small
tensors, so that they can be checked by hand and serialised to JSON. Conventions (those of AutoAttack and
RobustBench where they exist):

* an image counts as *robust* when it is classified correctly both clean and under attack;
* attack success rate and the perturbation statistics are taken over the images that were classified
  correctly before the attack (an already misclassified image needs no perturbation);
* rates over an empty set are ``nan``.

Example::

    >>> y = torch.tensor([0, 1, 2, 3])
    >>> robust_accuracy(torch.tensor([0, 1, 2, 0]), torch.tensor([0, 2, 2, 0]), y)
    0.5
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

NAN = float("nan")


def rate(mask: Tensor, among: Optional[Tensor] = None) -> float:
    """The fraction of ``True`` in the boolean ``mask`` (restricted to ``among`` when given); ``nan`` when
    empty."""
    if among is not None:
        mask = mask[among]
    return mask.double().mean().item() if mask.numel() else NAN


def accuracy(pred: Tensor, y: Tensor) -> float:
    """Fraction of predictions equal to the labels (``nan`` for none); ``pred`` and ``y`` may sit on different
    devices."""
    _check_same_length(pred=pred, y=y)
    return rate(pred.cpu() == y.cpu())


def _check_same_length(**tensors: Tensor) -> None:
    lengths = {name: t.shape for name, t in tensors.items() if t is not None}
    if len({tuple(s) for s in lengths.values()}) > 1 or any(len(s) != 1 for s in lengths.values()):
        got = ", ".join(f"{n} {list(s)}" for n, s in lengths.items())
        raise ValueError(f"metrics: expected 1-D tensors of one length, got {got}")


def clean_accuracy(clean_pred: Tensor, y: Tensor) -> float:
    """Fraction of images classified correctly without attack."""
    _check_same_length(clean_pred=clean_pred, y=y)
    return rate(clean_pred == y)


def robust_accuracy(clean_pred: Tensor, adv_pred: Tensor, y: Tensor) -> float:
    """Fraction of images classified correctly both clean and under attack (AutoAttack's convention)."""
    _check_same_length(clean_pred=clean_pred, adv_pred=adv_pred, y=y)
    return rate((clean_pred == y) & (adv_pred == y))


def attack_success_rate(clean_pred: Tensor, adv_pred: Tensor, y: Tensor, target: Optional[Tensor] = None) -> float:
    """Among the images classified correctly before the attack, the fraction the attack succeeded on:
    the prediction left ``y`` (untargeted) or reached ``target`` (targeted)."""
    _check_same_length(clean_pred=clean_pred, adv_pred=adv_pred, y=y, target=target)
    success = adv_pred != y if target is None else adv_pred == target
    return rate(success, among=clean_pred == y)


def fooling_ratio(clean_pred: Tensor, adv_pred: Tensor) -> float:
    """Fraction of all images whose predicted class changed under attack (DeepFool / UAP "fooling ratio")."""
    _check_same_length(clean_pred=clean_pred, adv_pred=adv_pred)
    return rate(adv_pred != clean_pred)


def fooled_not_detected(clean_pred: Tensor, adv_pred: Tensor, num_classes: int) -> float:
    """Fooling ratio of a classifier with fooling classes: the share of images whose prediction changed to
    another of the ``num_classes`` original classes. A change to a fooling class (``>= num_classes``) is a
    detection, not a fooling; with no fooling classes this is the plain fooling ratio."""
    _check_same_length(clean_pred=clean_pred, adv_pred=adv_pred)
    return rate((adv_pred != clean_pred) & (adv_pred < num_classes))


def targeted_success(adv_pred: Tensor, target: Tensor) -> float:
    """Fraction of all images classified as their target class under attack."""
    _check_same_length(adv_pred=adv_pred, target=target)
    return rate(adv_pred == target)


def norm_statistics(norms: Tensor, mask: Optional[Tensor] = None) -> Dict[str, float]:
    """``{"mean": ..., "median": ...}`` of ``norms`` (restricted to ``mask``); the median interpolates
    between the two middle values of an even-sized set."""
    values = norms.double() if mask is None else norms.double()[mask]
    if values.numel() == 0:
        return {"mean": NAN, "median": NAN}
    return {"mean": values.mean().item(), "median": torch.quantile(values, 0.5).item()}


def rho(delta_norm: Tensor, x_norm: Tensor, mask: Optional[Tensor] = None) -> float:
    """Deep Defense Eq. 7: ``rho_p = mean_k ||dx_k||_p / ||x_k||_p``.

    With L2 norms of DeepFool perturbations this is rho_2; with L-inf norms of FGS perturbations, rho_inf
    (Deep Defense supplementary Eq. 2). ``mask`` restricts the mean (e.g. to the attacked, correctly
    classified images)."""
    _check_same_length(delta_norm=delta_norm, x_norm=x_norm)
    ratio = delta_norm.double() / x_norm.double()
    if mask is not None:
        ratio = ratio[mask]
    return ratio.mean().item() if ratio.numel() else NAN


# ---- accuracy against the perturbation budget -----------------------------------------------------------

def minimal_eps(clean_pred: Tensor, y: Tensor, success: Tensor, norm: Tensor) -> Tensor:
    """Per-image smallest budget at which the image is misclassified, from a minimal-norm attack.

    0 for images misclassified clean, the perturbation norm where the attack succeeded, and ``inf``
    where it failed (no budget found). ``[N]`` float64."""
    _check_same_length(clean_pred=clean_pred, y=y, success=success, norm=norm)
    eps = torch.where(success.bool(), norm.double(), torch.full_like(norm, math.inf, dtype=torch.float64))
    return torch.where(clean_pred == y, eps, torch.zeros_like(eps))


def accuracy_at_eps(min_eps: Tensor, eps: float) -> float:
    """Accuracy under a budget ``eps`` given per-image minimal budgets: the fraction with ``min_eps > eps``."""
    return rate(min_eps > eps)


def accuracy_curve(min_eps: Tensor, eps_grid: Sequence[float]) -> List[float]:
    """Accuracy at every budget of ``eps_grid``: the whole accuracy-vs-eps curve from one minimal-norm run."""
    return [accuracy_at_eps(min_eps, float(e)) for e in eps_grid]


def eps_ref_from_minimal(min_eps: Tensor, fraction: float = 0.5) -> float:
    """Deep Defense's eps_ref: the smallest budget at which at least ``fraction`` of the images are
    misclassified, i.e. the ``ceil(fraction * N)``-th smallest minimal budget (``inf`` if never reached)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"eps_ref_from_minimal: fraction must be in (0, 1], got {fraction}")
    if min_eps.numel() == 0:
        return NAN
    k = math.ceil(fraction * min_eps.numel() - 1e-9)
    return torch.sort(min_eps.double()).values[k - 1].item()


def eps_ref_bisect(error_rate: Callable[[float], float], low: float, high: float, *, fraction: float = 0.5,
                   tol: float = 1e-3, max_iter: int = 60) -> float:
    """eps_ref by bisection for fixed-budget attacks such as FGS (Deep Defense section 4.1).

    ``error_rate(eps)`` runs the attack at ``eps`` and returns the fraction of misclassified images; it must
    be non-decreasing in ``eps``. Returns the smallest budget found (to within ``tol``) whose error rate is at
    least ``fraction``; raises ``ValueError`` when ``error_rate(high)`` does not reach it."""
    if not low < high:
        raise ValueError(f"eps_ref_bisect: need low < high, got low={low}, high={high}")
    if error_rate(high) < fraction:
        raise ValueError(f"eps_ref_bisect: error rate at high={high} is below {fraction}; raise high")
    if error_rate(low) >= fraction:
        return low
    for _ in range(max_iter):
        if high - low <= tol:
            break
        mid = (low + high) / 2
        if error_rate(mid) >= fraction:
            high = mid
        else:
            low = mid
    return high


def accuracy_at_eps_ref(accuracy: Callable[[float], float], eps_ref: float,
                        multiples: Sequence[float] = (0.2, 0.5, 1.0)) -> Dict[str, float]:
    """Deep Defense Table 1 columns ``Acc.@0.2/0.5/1.0 eps_ref``: ``accuracy(m * eps_ref)`` for each multiple.

    ``accuracy`` is e.g. ``functools.partial(accuracy_at_eps, min_eps)`` or a function that runs FGS."""
    return {f"{m:.1f}": accuracy(m * eps_ref) for m in multiples}


# ---- transfer, per-class and confusion ---------------------------------------------------------------

def transfer_matrix(adv_preds: Mapping[str, Mapping[str, Tensor]], y: Tensor, target: Optional[Tensor] = None,
                    clean_preds: Optional[Mapping[str, Tensor]] = None
                    ) -> Tuple[List[str], List[str], List[List[float]]]:
    """Success rates of transferred adversarial examples: rows are sources (models or ensembles the
    examples were crafted on), columns are targets (models they are evaluated on).

    ``adv_preds[source][target_model]`` holds the target model's predictions on the source's adversarial
    images; success is ``pred != y`` (untargeted) or ``pred == target`` (targeted). Rates are over all
    images, or, given ``clean_preds[target_model]``, over the images that target classifies correctly
    (the self-distillation seed keeps only images every model classifies correctly, where both agree).
    Returns ``(sources, targets, matrix)``."""
    sources = list(adv_preds)
    targets: List[str] = []
    for row in adv_preds.values():
        targets += [t for t in row if t not in targets]
    matrix = []
    for s in sources:
        row = []
        for t in targets:
            pred = adv_preds[s].get(t)
            if pred is None:
                row.append(NAN)
                continue
            _check_same_length(pred=pred, y=y, target=target)
            success = pred != y if target is None else pred == target
            row.append(rate(success, among=None if clean_preds is None else clean_preds[t] == y))
        matrix.append(row)
    return sources, targets, matrix


def per_class_accuracy(pred: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``[num_classes]`` float64 accuracy per true class (``nan`` for classes with no image)."""
    _check_same_length(pred=pred, y=y)
    total = torch.bincount(y, minlength=num_classes).double()
    correct = torch.bincount(y[pred == y], minlength=num_classes).double()
    return torch.where(total > 0, correct / total.clamp_min(1), torch.full_like(total, NAN))


def top_bottom_classes(per_class: Tensor, k: int) -> Tuple[List[Tuple[int, float]], List[Tuple[int, float]]]:
    """The ``k`` best and ``k`` worst classes as ``(class, accuracy)`` lists (Defendr Tables 5 and 6).

    Classes without images are left out; ties are broken by the smaller class index."""
    present = [(c, v) for c, v in enumerate(per_class.tolist()) if not math.isnan(v)]
    best = sorted(present, key=lambda cv: (-cv[1], cv[0]))[:k]
    worst = sorted(present, key=lambda cv: (cv[1], cv[0]))[:k]
    return best, worst


def confusion_matrix(clean_pred: Tensor, adv_pred: Tensor, num_classes: int) -> Tensor:
    """``[C, C]`` int64 counts: row = class predicted on the clean image, column = class predicted on its
    adversarial version (Defendr Figure 15). The diagonal holds the predictions the attack left unchanged."""
    _check_same_length(clean_pred=clean_pred, adv_pred=adv_pred)
    flat = clean_pred.long() * num_classes + adv_pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def summarize_attack(y: Tensor, clean_pred: Tensor, adv_pred: Tensor, l2: Tensor, linf: Tensor, x_l2: Tensor,
                     x_linf: Tensor, steps: Tensor, target: Optional[Tensor] = None) -> Dict[str, float]:
    """Every scalar metric of one attack over a set of images, as a flat JSON-ready dict."""
    correct = clean_pred == y
    success = (adv_pred != y) if target is None else (adv_pred == target)
    attacked = correct & success
    out = {
        "n": int(y.numel()),
        "clean_accuracy": clean_accuracy(clean_pred, y),
        "robust_accuracy": robust_accuracy(clean_pred, adv_pred, y),
        "attack_success_rate": attack_success_rate(clean_pred, adv_pred, y, target),
        "fooling_ratio": fooling_ratio(clean_pred, adv_pred),
    }
    if target is not None:
        out["targeted_success"] = targeted_success(adv_pred, target)
    for name, norms in (("l2", l2), ("linf", linf)):
        stats = norm_statistics(norms, attacked)
        out[f"{name}_mean"], out[f"{name}_median"] = stats["mean"], stats["median"]
    out["rho2"] = rho(l2, x_l2, attacked)
    out["rho_inf"] = rho(linf, x_linf, attacked)
    out["mean_steps"] = steps.double().mean().item() if steps.numel() else NAN
    return out


__all__ = [
    "rate", "accuracy", "fooled_not_detected",
    "clean_accuracy", "robust_accuracy", "attack_success_rate", "fooling_ratio", "targeted_success",
    "norm_statistics", "rho", "minimal_eps", "accuracy_at_eps", "accuracy_curve", "eps_ref_from_minimal",
    "eps_ref_bisect", "accuracy_at_eps_ref", "transfer_matrix", "per_class_accuracy", "top_bottom_classes",
    "confusion_matrix", "summarize_attack",
]
