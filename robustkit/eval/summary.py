"""Turns the merged batch records of a run into the ``results.json`` object.

Layout::

    {"n", "clean": {"accuracy", "per_class": {"accuracy": [C], "top": [[class, acc]], "bottom": ...}},
     "attacks": {name: {"attack": {...hyperparameters}, "metrics": {"robust_accuracy", ...},
                        "timing": {"seconds", "images_per_second"}, "per_class": ..., "confusion": ...,
                        "curve": {"norm", "eps", "accuracy"} (minimal-norm attacks)}},
     "worst_case": {"robust_accuracy"}, "curves": {family: {"norm", "eps", "accuracy", "source"}},
     "transfer": {"sources", "targets", "matrix"}, "settings", "run", "software", "device"}
"""
from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional, Sequence

import torch

from robustkit import metrics as M
from robustkit.eval.records import column, iter_transfer_columns
from robustkit.eval.storage import json_safe

#: The optional analyses ``evaluate(metrics=...)`` can switch on.
ALL_METRICS = ("per_class", "confusion", "curve", "transfer")
EPS_REF_MULTIPLES = (0.2, 0.5, 1.0)


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
    robust_all = clean_pred == y
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
        robust_all &= adv_pred == y
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
    if attacks:
        results["worst_case"] = {"robust_accuracy": robust_all.double().mean().item() if y.numel() else math.nan}
    results["curves"] = _sweep_curves(per_attack)
    if "transfer" in metrics and per_attack:
        sources = list(per_attack)
        targets = list(per_attack[sources[0]]["transfer"])
        results["transfer"] = {"sources": sources, "targets": targets,
                               "matrix": [[per_attack[s]["transfer"][t] for t in targets] for s in sources]}
    return json_safe(results)


def _sweep_curves(per_attack: Dict[str, dict]) -> Dict[str, dict]:
    """Accuracy-vs-eps curves of fixed-budget attacks run at several eps (one run per eps), per family."""
    families: Dict[str, list] = {}
    for name, entry in per_attack.items():
        meta = entry["attack"]
        if meta.get("minimal_norm") is None and isinstance(meta.get("eps"), (int, float)):
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


__all__ = ["summarize", "ALL_METRICS", "default_eps_grid"]
