"""Fused ops. Each wraps a ``torch.ops.robustkit`` op with argument handling, a fake kernel for
``torch.compile`` and, where it is differentiable, an autograd formula."""
from robustkit.ops.ensemble_ce import ensemble_temperature_ce
from robustkit.ops.sign_step import sign_momentum_step

__all__ = ["ensemble_temperature_ce", "sign_momentum_step"]
