"""Fused sign-momentum step with projection: the update of FGSM, I-FGSM, PGD and MI-FGSM."""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from robustkit import _ext  # registers torch.ops.robustkit when the extension is built

PerSample = Union[float, Tensor]


def sign_momentum_step(
    x_adv: Tensor,
    x_orig: Tensor,
    grad: Tensor,
    momentum: Optional[Tensor],
    *,
    step_size: PerSample,
    eps: PerSample,
    decay: float = 1.0,
    grad_norm: str = "l1",
    norm: str = "linf",
    clip: Optional[Tuple[float, float]] = (0.0, 1.0),
) -> Tuple[Tensor, Optional[Tensor]]:
    """One attack step, in place on ``x_adv`` and ``momentum``, in one pass over the elements.

    Per sample (MI-FGSM, Dong et al. 2018)::

        g <- decay * g + grad / ||grad||_1          (grad_norm="none": g <- decay * g + grad)
        linf:  x <- clip(project_{||x - x_orig||_inf <= eps}(x + step_size * sign(g)))
        l2:    x <- clip(project_{||x - x_orig||_2 <= eps}(x + step_size * g / ||g||_2))

    ``decay=0, grad_norm="none"`` is the I-FGSM / PGD step. The caller negates ``grad`` for targeted
    attacks. ``momentum=None`` means no momentum buffer (``g`` is the normalised gradient).

    Args:
        x_adv, x_orig, grad, momentum: ``[B, ...]`` float32 or float64 tensors of one shape, dtype and
            device. Any layout works; contiguous and channels_last tensors are updated without copies.
        step_size, eps: floats, or per-sample ``[B]`` tensors. ``step_size`` must be finite and ``eps``
            >= 0 (also per sample: a NaN is an error).
        The updated buffers (``x_adv``, ``momentum``) must not share memory with each other or with
        ``x_orig`` or ``grad`` (pass ``x_orig.clone()`` as ``x_adv``): that is an error.
        clip: the box, ``None`` for none.

    Numerics: an all-zero gradient gives a zero step (norms are floored at 1e-12). Squared L2 norms are
    summed in float64, so float32 gradients up to float32's range give the right step. A NaN in a sample's
    ``grad`` makes no move for the elements it reaches (``sign(NaN)`` is taken as 0, and a NaN L2
    increment as no move), so ``x_adv`` stays finite, inside the ball and the box; with
    ``grad_norm="l1"`` the NaN reaches the whole sample's momentum, which becomes NaN.

    Returns:
        ``(x_adv, momentum)``, the same tensors, updated.

    Example::

        >>> x = torch.rand(8, 3, 32, 32); x_adv = x.clone(); g = torch.zeros_like(x)
        >>> grad = torch.randn_like(x)
        >>> sign_momentum_step(x_adv, x, grad, g, step_size=2/255, eps=8/255)
    """
    _ext.require_ops()
    step_t, step_f = _split_per_sample(step_size, "step_size")
    eps_t, eps_f = _split_per_sample(eps, "eps")
    if eps_t is None and eps_f < 0:
        raise ValueError(f"sign_momentum_step: eps must be >= 0, got {eps_f}")
    clip_min, clip_max = (-math.inf, math.inf) if clip is None else (float(clip[0]), float(clip[1]))
    torch.ops.robustkit.sign_momentum_step_(
        x_adv, x_orig, grad, momentum, step_t, eps_t, step_f, eps_f, float(decay), grad_norm, norm,
        clip_min, clip_max)
    return x_adv, momentum


def _split_per_sample(value: PerSample, name: str) -> Tuple[Optional[Tensor], float]:
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return None, float(value)
        return value, 0.0
    if not isinstance(value, (int, float)):
        raise TypeError(f"sign_momentum_step: {name} must be a float or a [B] tensor, got {type(value).__name__}")
    return None, float(value)


def _fake(x_adv, x_orig, grad, momentum, step_t, eps_t, step_size, eps, decay, grad_norm, norm, clip_min,
          clip_max):
    torch._check(x_orig.shape == x_adv.shape, lambda: "x_orig and x_adv must have the same shape")
    torch._check(grad.shape == x_adv.shape, lambda: "grad and x_adv must have the same shape")
    return None


if _ext.has_ops():  # the schema exists only when the extension is built
    torch.library.register_fake("robustkit::sign_momentum_step_")(_fake)
