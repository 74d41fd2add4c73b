"""Turns the merged batch records of a run into the ``results.json`` object.

Layout::

    {"n", "clean": {"accuracy", "per_class": {"accuracy": [C], "top": [[class, acc]], "bottom": ...}},
     "attacks": {name: {"attack": {...hyperparameters}, "metrics": {"robust_accuracy", ...},
                        "timing": {"seconds", "images_per_second"}, "per_class": ..., "confusion": ...,
                        "curve": {"norm", "eps", "accuracy"} (minimal-norm attacks)}},
     "worst_case": {"robust_accuracy", "norm", "eps", "attacks", "strongest",
                    "by_budget": [{"norm", "eps", "attacks", "robust_accuracy", "strongest"}]},
     "curves": {family: {"norm", "eps", "accuracy", "source"}},
     "transfer": {"sources", "targets", "matrix"}, "model_name", "settings", "run", "software", "device"}

``worst_case`` counts only fixed-budget attacks (``attack_kind``): per budget (norm, eps), the fraction of
images classified correctly clean and under every fixed-budget attack at that budget. Minimal-norm attacks
(DeepFool, C&W) search until they succeed, so their robust accuracy says nothing about the model; their
perturbation norms do. The headline budget is the one with the most attacks (the first such on a tie).
"""
from __future__ import annotations

import functools
import math
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from robustkit import metrics as M
from robustkit.eval.records import column, iter_transfer_columns
from robustkit.eval.storage import json_safe

#: The optional analyses ``evaluate(metrics=...)`` can switch on.
ALL_METRICS = ("per_class", "confusion", "curve", "transfer")
EPS_REF_MULTIPLES = (0.2, 0.5, 1.0)
FIXED_BUDGET, MINIMAL_NORM, OTHER = "fixed_budget", "minimal_norm", "other"


def attack_kind(meta: Mapping) -> str:
    """``"fixed_budget"``, ``"minimal_norm"`` or ``"other"`` for an attack description (``describe_attack``)."""
    kind = meta.get("kind")
    if kind in (FIXED_BUDGET, MINIMAL_NORM, OTHER):
        return kind
    # a results.json written before "kind" was recorded: "minimal_norm" was set from isinstance(MinimalNormAttack)
    # and "eps" from the attack's attribute, which every FixedBudgetAttack has
    if meta.get("minimal_norm") is not None:
        return MINIMAL_NORM
    return FIXED_BUDGET if isinstance(meta.get("eps"), (int, float)) and not isinstance(meta.get("eps"), bool) \
        else OTHER


def budget_groups(attacks: Mapping[str, Mapping]) -> List[dict]:
    """The fixed-budget attacks grouped by budget, in attack order: ``[{"norm", "eps", "attacks": [names]}]``."""
    groups: Dict[tuple, dict] = {}
    for name, meta in attacks.items():
        if attack_kind(meta) == FIXED_BUDGET:
            key = (meta.get("norm"), meta.get("eps"))
            groups.setdefault(key, {"norm": key[0], "eps": key[1], "attacks": []})["attacks"].append(name)
    return list(groups.values())


def headline_budget(attacks: Mapping[str, Mapping]) -> Optional[dict]:
    """The budget group the headline reports (most attacks, the first on a tie), or None without a
    fixed-budget attack. The progress bar and ``results["worst_case"]`` use the same group."""
    groups = budget_groups(attacks)
    return max(groups, key=lambda g: len(g["attacks"])) if groups else None


def default_eps_grid(min_eps: torch.Tensor, points: int = 21) -> List[float]:
    """An even grid from 0 to the largest finite minimal budget (a curve that reaches zero accuracy)."""
    finite = min_eps[torch.isfinite(min_eps)]
    top = finite.max().item() if finite.numel() else 1.0
    return [top * i / (points - 1) for i in range(points)]


def _per_class(pred: torch.Tensor, y: torch.Tensor, num_classes: int, top_k: int) -> dict:
    acc = M.per_class_accuracy(pred, y, num_classes)
    best, worst = M.top_bottom_classes(acc, top_k)
    return {"accuracy": acc.tolist(), "top": [list(t) for t in best], "bottom": [list(t) for t in worst]}


def summarize(records: List[dict], attacks: Dict[str, dict], *, num_classes: int, model_name: str,
              metrics: Sequence[str] = ALL_METRICS, eps_grid: Optional[Sequence[float]] = None,
              top_k: int = 10) -> dict:
    """The results object (without settings/software, which the runner adds) from merged records."""
    y = column(records, "y", dtype=torch.int64)
    clean_pred = column(records, "clean_pred", dtype=torch.int64)
    x_l2, x_linf = column(records, "x_l2"), column(records, "x_linf")
    results: dict = {"n": int(y.numel()), "clean": {"accuracy": M.clean_accuracy(clean_pred, y)}}
    if "per_class" in metrics:
        results["clean"]["per_class"] = _per_class(clean_pred, y, num_classes, top_k)
    survived: Dict[str, torch.Tensor] = {}
    per_attack: Dict[str, dict] = {}
    for name, meta in attacks.items():
        adv_pred = column(records, "pred", name, torch.int64)
        target = column(records, "target", name, torch.int64) if records and records[0]["attacks"][name]["target"] \
            is not None else None
        l2, linf = column(records, "l2", name), column(records, "linf", name)
        steps = column(records, "steps", name, torch.int64)
        entry: dict = {"attack": meta,
                       "metrics": M.summarize_attack(y, clean_pred, adv_pred, l2, linf, x_l2, x_linf, steps, target)}
        seconds = sum(r["attacks"][name]["seconds"] for r in records)
        entry["timing"] = {"seconds": seconds, "images_per_second": y.numel() / seconds if seconds > 0 else None}
        survived[name] = (clean_pred == y) & (adv_pred == y)
        if "per_class" in metrics:
            entry["per_class"] = _per_class(torch.where(clean_pred == y, adv_pred, clean_pred), y, num_classes,
                                            top_k)
        if "confusion" in metrics:
            entry["confusion"] = M.confusion_matrix(clean_pred, adv_pred, num_classes).tolist()
        norm = meta.get("minimal_norm")
        if "curve" in metrics and norm in ("l2", "linf"):
            success = (adv_pred != y) if target is None else (adv_pred == target)
            min_eps = M.minimal_eps(clean_pred, y, success, l2 if norm == "l2" else linf)
            grid = list(eps_grid) if eps_grid is not None else default_eps_grid(min_eps)
            entry["curve"] = {"norm": norm, "eps": grid, "accuracy": M.accuracy_curve(min_eps, grid)}
            eps_ref = M.eps_ref_from_minimal(min_eps)
            entry["metrics"]["eps_ref"] = eps_ref
            if math.isfinite(eps_ref):
                at = M.accuracy_at_eps_ref(functools.partial(M.accuracy_at_eps, min_eps), eps_ref, EPS_REF_MULTIPLES)
                for multiple, acc in at.items():
                    entry["metrics"][f"accuracy_at_{multiple}_eps_ref"] = acc
        if "transfer" in metrics:
            entry["transfer"] = {model_name: M.attack_success_rate(clean_pred, adv_pred, y, target)}
            for target_name, target_clean, target_adv in iter_transfer_columns(records, name):
                entry["transfer"][target_name] = M.attack_success_rate(target_clean, target_adv, y, target)
        per_attack[name] = entry
    results["attacks"] = per_attack
    results["model_name"] = model_name
    worst = _worst_case(attacks, per_attack, survived, int(y.numel()))
    if worst is not None:
        results["worst_case"] = worst
    results["curves"] = _sweep_curves(per_attack)
    if "transfer" in metrics and per_attack:
        sources = list(per_attack)
        targets = list(per_attack[sources[0]]["transfer"])
        results["transfer"] = {"sources": sources, "targets": targets,
                               "matrix": [[per_attack[s]["transfer"][t] for t in targets] for s in sources]}
    return json_safe(results)


def transfer_only_to_itself(results: Mapping) -> bool:
    """True when the run's transfer matrix has the attacked model as its only target (nothing transferred)."""
    transfer = results.get("transfer") or {}
    return len(transfer.get("targets", [])) <= 1 and not (results.get("settings") or {}).get("transfer_to")


def _worst_case(attacks: Mapping[str, dict], per_attack: Dict[str, dict], survived: Dict[str, torch.Tensor],
                n: int) -> Optional[dict]:
    """Per budget: the per-image worst case over its fixed-budget attacks and its strongest single attack."""
    by_budget = []
    for group in budget_groups(attacks):
        robust = functools.reduce(torch.logical_and, [survived[a] for a in group["attacks"]])
        strongest = min(group["attacks"], key=lambda a: _or_inf(per_attack[a]["metrics"]["robust_accuracy"]))
        by_budget.append(dict(group, robust_accuracy=robust.double().mean().item() if n else math.nan,
                              strongest=strongest))
    if not by_budget:
        return None
    headline = headline_budget(attacks)
    main = next(g for g in by_budget if g["attacks"] == headline["attacks"])
    return dict(main, by_budget=by_budget)


def _or_inf(value) -> float:
    return math.inf if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _sweep_curves(per_attack: Dict[str, dict]) -> Dict[str, dict]:
    """Accuracy-vs-eps curves of fixed-budget attacks run at several eps (one run per eps), per family."""
    families: Dict[str, list] = {}
    for name, entry in per_attack.items():
        meta = entry["attack"]
        if attack_kind(meta) == FIXED_BUDGET:
            families.setdefault(meta["family"], []).append((meta["eps"], entry["metrics"]["robust_accuracy"],
                                                           meta.get("norm")))
    curves = {}
    for family, points in families.items():
        if len(points) < 2:
            continue
        points.sort()
        curves[family] = {"norm": points[0][2], "eps": [p[0] for p in points], "accuracy": [p[1] for p in points],
                          "source": "one run per eps"}
    for name, entry in per_attack.items():
        if "curve" in entry:
            curves[name] = dict(entry["curve"], source="minimal-norm run")
    return curves


__all__ = ["summarize", "ALL_METRICS", "default_eps_grid", "attack_kind", "budget_groups", "headline_budget",
           "transfer_only_to_itself", "FIXED_BUDGET", "MINIMAL_NORM", "OTHER"]
