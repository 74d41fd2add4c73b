"""Robustness evaluation: the streaming resumable runner, torch.distributed sharding and reports.

Example::

    >>> from robustkit.eval import evaluate
    >>> results = evaluate(model, robustkit.datasets.mnist("test"), {"pgd": PGD(model, eps=0.3, steps=40)},
    ...                    out="runs/lenet", limit=1000)
    >>> results["attacks"]["pgd"]["metrics"]["robust_accuracy"]

The names below load on first use, so reading results and writing reports (``robustkit.eval.records``,
``summary``, ``report``) works without the compiled extension that the attacks need.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: name -> module that defines it
_EXPORTS = {"evaluate": "robustkit.eval.runner", "batch_seed": "robustkit.eval.runner",
            "fgs_eps_ref": "robustkit.eval.eps_ref", "fgs_accuracy": "robustkit.eval.eps_ref",
            "fgs_minimal_eps": "robustkit.eval.eps_ref", "grad_cam": "robustkit.eval.gradcam"}

if TYPE_CHECKING:   # pragma: no cover
    from robustkit.eval import metrics  # noqa: F401
    from robustkit.eval.eps_ref import fgs_accuracy, fgs_eps_ref, fgs_minimal_eps  # noqa: F401
    from robustkit.eval.gradcam import grad_cam  # noqa: F401
    from robustkit.eval.runner import batch_seed, evaluate  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name == "metrics":
        value = importlib.import_module("robustkit.eval.metrics")
    else:
        raise AttributeError(f"module 'robustkit.eval' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | {"metrics"})


__all__ = ["evaluate", "metrics", "grad_cam", "batch_seed", "fgs_eps_ref", "fgs_accuracy", "fgs_minimal_eps"]
