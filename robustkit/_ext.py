"""Loads the compiled extension ``robustkit._C`` and says what to do when it is missing or stale.

Importing ``robustkit._C`` registers the ``torch.ops.robustkit.*`` schemas and their CPU (and, in CUDA
builds, CUDA) kernels with the dispatcher.
"""
from __future__ import annotations

import torch

_BUILD_HINT = (
    "robustkit's compiled extension (robustkit._C) {problem}. Build it from the repository root with\n"
    "    make setup\n"
    "(or: pip install --no-build-isolation -e .), with the torch you want to use already installed."
)

try:
    from robustkit import _C  # noqa: F401  (registers the ops)
except ImportError as err:  # pragma: no cover - exercised by hand, not in the built test environment
    raise ImportError(_BUILD_HINT.format(problem=f"could not be imported ({err})")) from err

if _C.torch_version.split("+")[0] != torch.__version__.split("+")[0]:  # pragma: no cover
    raise ImportError(_BUILD_HINT.format(
        problem=f"was built for torch {_C.torch_version} but torch {torch.__version__} is installed; rebuild it"))


def build_info() -> dict:
    """How the extension was built: ``{"torch": ..., "cuda_kernels": bool}``."""
    return {"torch": _C.torch_version, "cuda_kernels": bool(_C.with_cuda)}


def has_cuda_kernels() -> bool:
    return bool(_C.with_cuda)
