"""DeepFool's linearisation step as one differentiable fused op (DeepFool, Moosavi-Dezfooli et al. 2016;
trained through by Deep Defense, Yan et al. 2018)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from robustkit import _ext  # registers torch.ops.robustkit when the extension is built
from robustkit.ops._autograd import register_no_double_backward

_NORMS = ("l2", "linf")


def deepfool_step(f: Tensor, w: Tensor, *, norm: str = "l2") -> Tuple[Tensor, Tensor]:
    """The step to the nearest linearised decision boundary, per sample.

    With ``f[b, k] = z_k(x_b) - z_orig(x_b)`` the logit difference of candidate class k and ``w[b, k]`` its
    input gradient (flattened), the op picks (DeepFool, Alg. 2 / Eq. 8 and its L-inf form)::

        l = argmin_k |f_k| / ||w_k||_q             q = 2 for norm="l2", q = 1 for norm="linf" (dual norm)
        l2:   r = (|f_l| + 1e-4) / ||w_l||_2^2 * w_l
        linf: r = (|f_l| + 1e-4) / ||w_l||_1   * sign(w_l)

    The ``1e-4`` is the push past the boundary of the DeepFool reference code. ``r`` is differentiable
    with respect to ``f`` and ``w`` (the argmin index is held constant, as in Deep Defense's Eq. 3/6 where
    the regulariser is trained through the DeepFool perturbation); double backward is not supported.
    Differentiating that gradient again raises (``_deepfool_step_backward`` has no derivative).
    Ties go to the lowest k and a NaN distance loses to any number; norms are floored at 1e-12 so an all-zero
    gradient gives a finite step (and with D = 0, empty gradient rows, ``l = argmin_k |f_k|``).

    Args:
        f: ``[B, K]`` float32 or float64 logit differences.
        w: ``[B, K, D]`` their gradients, same dtype and device.
        norm: ``"l2"`` or ``"linf"``.

    Returns:
        ``(step, index)``: ``step`` ``[B, D]`` in ``w``'s dtype, and ``index`` int64 ``[B]``, the chosen
        candidate (not differentiable).

    Example::

        >>> f = torch.randn(8, 9); w = torch.randn(8, 9, 784, requires_grad=True)
        >>> r, l = deepfool_step(f, w, norm="l2")
        >>> r.norm(dim=1).sum().backward()
    """
    _ext.require_ops()
    if norm not in _NORMS:
        raise ValueError(f"deepfool_step: norm must be one of {_NORMS}, got {norm!r}")
    if not isinstance(f, Tensor) or not isinstance(w, Tensor):
        raise TypeError("deepfool_step: f and w must be tensors, got "
                        f"{type(f).__name__} and {type(w).__name__}")
    return torch.ops.robustkit.deepfool_step(f, w, norm)


def _fake(f, w, norm):
    torch._check(f.dim() == 2, lambda: f"deepfool_step: f must be [B, K], got {list(f.shape)}")
    torch._check(w.dim() == 3 and w.shape[:2] == f.shape,
                 lambda: f"deepfool_step: w must be [B, K, D] with [B, K] = {list(f.shape)}, got {list(w.shape)}")
    batch, dim = w.shape[0], w.shape[2]
    return w.new_empty((batch, dim)), w.new_empty((batch,), dtype=torch.int64)


def _fake_backward(grad_step, f, w, index, norm):
    return torch.empty_like(f, memory_format=torch.contiguous_format), torch.empty_like(
        w, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    f, w, norm = inputs
    _, index = output
    ctx.mark_non_differentiable(index)
    ctx.save_for_backward(f, w, index)
    ctx.norm = norm


def _backward(ctx, grad_step, _grad_index):
    f, w, index = ctx.saved_tensors
    if grad_step is None:
        return None, None, None
    grad_f, grad_w = torch.ops.robustkit._deepfool_step_backward(grad_step.contiguous(), f, w, index, ctx.norm)
    return grad_f, grad_w, None


if _ext.has_ops():  # the schemas exist only when the extension is built
    torch.library.register_fake("robustkit::deepfool_step")(_fake)
    torch.library.register_fake("robustkit::_deepfool_step_backward")(_fake_backward)
    torch.library.register_autograd("robustkit::deepfool_step", _backward, setup_context=_setup_context)
    register_no_double_backward("robustkit::_deepfool_step_backward", "deepfool_step")
