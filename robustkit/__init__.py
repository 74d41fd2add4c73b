"""robustkit: adversarial robustness for PyTorch, with fused C++/CUDA kernels behind a thin Python API.

The subpackages load on first use (``robustkit.attacks``, ``robustkit.eval``, ...), so ``import robustkit``
is cheap and works in a tree where the compiled extension is not built: the modules that need no kernel
(datasets, metrics, models, reading results, reports) import anyway, and an op fails only when called.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robustkit._version import __version__

#: Subpackages and modules reachable as attributes of ``robustkit`` (imported on first access).
_SUBMODULES = ("ops", "nn", "metrics", "attacks", "datasets", "models", "training", "zoo", "defenses", "eval",
               "reproduce", "cli")
#: Names re-exported at the top level: name -> module that defines it.
_EXPORTS = {"Normalize": "robustkit.nn", "Ensemble": "robustkit.nn", "build_info": "robustkit._ext"}

if TYPE_CHECKING:   # pragma: no cover
    from robustkit import attacks, datasets, defenses, eval, metrics, models, nn, ops, training, zoo  # noqa: F401
    from robustkit._ext import build_info  # noqa: F401
    from robustkit.nn import Ensemble, Normalize  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"robustkit.{name}")
        globals()[name] = module
        return module
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'robustkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_EXPORTS))


__all__ = ["__version__", "ops", "nn", "metrics", "attacks", "datasets", "models", "training", "zoo", "defenses",
           "eval", "Normalize", "Ensemble", "build_info"]
