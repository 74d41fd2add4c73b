"""robustkit: adversarial robustness for PyTorch, with fused C++/CUDA kernels behind a thin Python API."""
from robustkit._version import __version__
from robustkit import _ext  # noqa: F401  (loads the extension; a clear error if it is not built)
from robustkit import ops
from robustkit import attacks
from robustkit import datasets
from robustkit import models
from robustkit import eval
from robustkit import defenses
from robustkit.attacks import Normalize
from robustkit._ext import build_info

__all__ = ["__version__", "ops", "attacks", "datasets", "models", "eval", "defenses", "Normalize", "build_info"]
