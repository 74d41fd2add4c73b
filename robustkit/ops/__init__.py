"""Fused ops. Each wraps a ``torch.ops.robustkit`` op with argument handling, a fake kernel for
``torch.compile`` and, where it is differentiable, an autograd formula."""
from robustkit.ops.conv2d_input_grad import conv2d_input_grad
from robustkit.ops.cw_l2_step import cw_l2_step
from robustkit.ops.deepfool_step import deepfool_step
from robustkit.ops.ensemble_temperature_ce import ensemble_temperature_ce, ensemble_temperature_ce_grad
from robustkit.ops.sign_momentum_step import sign_momentum_step

__all__ = ["ensemble_temperature_ce", "ensemble_temperature_ce_grad", "sign_momentum_step", "deepfool_step", "cw_l2_step",
           "conv2d_input_grad"]
