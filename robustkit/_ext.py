"""Loads the compiled extension ``robustkit._C`` and says what to do when it is missing or stale.

Importing ``robustkit._C`` registers the ``torch.ops.robustkit.*`` schemas and their CPU (and, in CUDA
builds, CUDA) kernels with the dispatcher. As in torchvision's ``extension.py``, a missing or stale extension
is not an import error: ``_HAS_OPS`` is False, ``robustkit.ops`` still imports (without registering fake
kernels or autograd formulas), and calling an op raises :class:`RuntimeError` with the build hint. Everything
that needs no kernel (datasets, models, metrics, reading results) works in an unbuilt tree.
"""
from __future__ import annotations

import importlib.util

import torch

_BUILD_HINT = (
    "robustkit's compiled extension (robustkit._C) {problem}. Build it from the repository root with\n"
    "    make setup\n"
    "(or: pip install --no-build-isolation -e .), with the torch you want to use already installed."
)

_HAS_OPS = False
_PROBLEM = ""
_C = None

try:
    from robustkit import _C  # noqa: F811  (registers the ops)
except ImportError as err:
    if importlib.util.find_spec("robustkit._C") is None:
        _PROBLEM = "is not built (there is no robustkit/_C*.so)"
    else:
        _PROBLEM = f"could not be imported ({err})"
else:
    if _C.torch_version.split("+")[0] != torch.__version__.split("+")[0]:
        _PROBLEM = f"was built for torch {_C.torch_version} but torch {torch.__version__} is installed; rebuild it"
    else:
        _HAS_OPS = True


def has_ops() -> bool:
    """Whether the compiled ops are available (the extension is built for the installed torch)."""
    return _HAS_OPS


def require_ops() -> None:
    """Raises the build hint when the compiled ops are not available; every op calls this first."""
    if not _HAS_OPS:
        raise RuntimeError(_BUILD_HINT.format(problem=_PROBLEM))


def build_info() -> dict:
    """How the extension was built: ``{"built": bool, "torch": ..., "cuda_kernels": bool}``; ``torch`` is None
    and ``cuda_kernels`` False when the extension is not available."""
    if not _HAS_OPS:
        return {"built": False, "torch": None, "cuda_kernels": False, "problem": _PROBLEM}
    return {"built": True, "torch": _C.torch_version, "cuda_kernels": bool(_C.with_cuda)}


def has_cuda_kernels() -> bool:
    return _HAS_OPS and bool(_C.with_cuda)
