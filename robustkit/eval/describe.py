"""What a run is made of, as JSON: attack hyperparameters, model fingerprints, software and device.

The descriptions serve two purposes: ``results.json`` records them, and a resumed run compares them with
those of the interrupted run, so that it never mixes records of two different evaluations.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import sys
from typing import Any, Dict, Optional

import torch
from torch import nn

from robustkit.attacks.base import Attack, FixedBudgetAttack, MinimalNormAttack

_SIMPLE = (bool, int, float, str, type(None))


def _plain(value: Any) -> Any:
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, _SIMPLE) for v in value):
        return list(value)
    return None


def describe_attack(attack: Attack) -> Dict[str, Any]:
    """Class, family, kind, norm/eps and the plain-valued hyperparameters of ``attack`` (its seed excluded:
    the runner seeds every batch itself).

    ``kind`` is ``"fixed_budget"`` (a :class:`FixedBudgetAttack`: robust accuracy at its ``eps`` is its
    measure), ``"minimal_norm"`` (a :class:`MinimalNormAttack`: it searches until it succeeds, so its
    perturbation norms are the measure) or ``"other"``; the report's headline uses only fixed-budget attacks."""
    params: Dict[str, Any] = {}
    for key, value in vars(attack).items():
        if key.startswith("_") or key in ("models", "ensemble", "seed"):
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            params.update({k: _plain(v) for k, v in dataclasses.asdict(value).items()})
        elif isinstance(value, _SIMPLE) or _plain(value) is not None:
            params[key] = _plain(value)
    name = type(attack).__name__
    # a minimal-norm attack's one run gives the whole accuracy-vs-eps curve in the norm it minimises
    minimal = attack.norm if isinstance(attack, MinimalNormAttack) else None
    params["ensemble_weights"] = attack.ensemble.weights
    kind = ("fixed_budget" if isinstance(attack, FixedBudgetAttack) else
            "minimal_norm" if isinstance(attack, MinimalNormAttack) else "other")
    return {"class": name, "family": name.lower(), "kind": kind, "models": len(attack.models),
            "eps": _plain(getattr(attack, "eps", None)), "norm": _plain(getattr(attack, "norm", None)),
            "minimal_norm": minimal, "params": params}


def model_fingerprint(model: nn.Module) -> Dict[str, Any]:
    """Class name, parameter count and a SHA-256 over the state dict (catches a change of weights)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "sha256": digest.hexdigest()[:16]}


def software_versions() -> Dict[str, str]:
    import numpy

    from robustkit._version import __version__
    return {"robustkit": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}


def device_description(device: torch.device, world_size: int) -> Dict[str, Any]:
    info: Dict[str, Any] = {"device": str(device), "world_size": world_size, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = cpu_name() or platform.processor() or "cpu"
        info["cpu_count"] = os.cpu_count()
    return info


def cpu_name() -> Optional[str]:
    """The CPU model from /proc/cpuinfo (None where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


__all__ = ["describe_attack", "model_fingerprint", "software_versions", "device_description", "cpu_name"]
