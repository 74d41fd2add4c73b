"""Ensemble temperature cross-entropy: the loss of the self-distillation attack (Eq. 8)."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from robustkit import _ext  # registers torch.ops.robustkit when the extension is built
from robustkit.ops._autograd import register_no_double_backward

Logits = Union[Tensor, Sequence[Tensor]]
_REDUCTIONS = ("none", "sum", "mean")
_FUSIONS = ("loss", "logits")
_NUM_ROW_STATS = 5  # kNumRowStats in csrc/ops/ensemble_temperature_ce/ensemble_temperature_ce_math.h


def ensemble_temperature_ce(
    logits: Logits,
    target: Tensor,
    *,
    temperature: float = 1.0,
    soft_weight: float = 1.0,
    hard_weight: float = 0.0,
    reduction: str = "mean",
    fusion: str = "loss",
    weights: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Temperature-softened cross-entropy fused across an ensemble of K models.

    With ``fusion="loss"`` (Eq. 8 of the self-distillation attack; λ1 = ``soft_weight``,
    λ2 = ``hard_weight``), per sample b::

        soft_weight * sum_k CE(z_kb / T, y_b) + hard_weight * sum_k CE(z_kb, y_b)

    computed in one pass over the logits forward and one backward (the backward is
    ``soft_weight / T (softmax(z/T) - onehot) + hard_weight (softmax(z) - onehot)``). With
    ``fusion="logits"`` (the baseline of Dong et al.), the logits are first averaged with ``weights``
    (uniform by default) and the same loss is taken of the average, as one model.

    Args:
        logits: ``[K, B, C]`` stacked logits, or a list of K ``[B, C]`` tensors. float32, float64, float16
            or bfloat16; half precision accumulates in float32.
        target: int64 ``[B]`` class indices in ``[0, C)``. An index out of range raises on every device (on
            CUDA the check copies the ``[B]`` targets to the host).
        temperature: T > 0. Stable for |z| up to 1e4 with T from 1e-2 to 1e3. For float32, float16 and
            bfloat16 logits T must lie in [1e-30, 1e30], so that 1/T is a normal float32 (outside it the loss
            would be NaN); float64 logits accept any T whose inverse is finite.
        reduction: ``"none"`` (``[B]``), ``"sum"`` or ``"mean"`` over the batch.

    Example::

        >>> z = torch.randn(4, 8, 10, requires_grad=True)   # 4 models, 8 samples, 10 classes
        >>> y = torch.randint(0, 10, (8,))
        >>> loss = ensemble_temperature_ce(z, y, temperature=16.0, hard_weight=1.0)
        >>> loss.backward()
    """
    _ext.require_ops()
    stacked = _stack_logits(logits)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"ensemble_temperature_ce: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if fusion not in _FUSIONS:
        raise ValueError(f"ensemble_temperature_ce: fusion must be one of {_FUSIONS}, got {fusion!r}")
    if not isinstance(target, Tensor):
        raise TypeError(f"ensemble_temperature_ce: target must be an int64 tensor, got {type(target).__name__}")
    if fusion == "logits":
        stacked = _average_logits(stacked, weights)
    elif weights is not None:
        raise ValueError("ensemble_temperature_ce: weights apply to fusion='logits' only")
    per_sample, _ = torch.ops.robustkit.ensemble_temperature_ce(
        stacked, target, float(temperature), float(soft_weight), float(hard_weight))
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean()
    return per_sample


def ensemble_temperature_ce_grad(
    logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    soft_weight: float = 1.0,
    hard_weight: float = 0.0,
    scale: float = 1.0,
) -> Tensor:
    """The gradient of ``scale * ensemble_temperature_ce(logits, target, reduction="sum", fusion="loss")``
    with respect to the ``[K, B, C]`` logits, from the same two fused kernels, without an autograd graph.

    For attacks, which need only the input gradient: ``torch.autograd.grad(member_logits, x, grad_outputs=
    this.unbind(0))`` then gives it. Calling the kernels directly skips the Python autograd wrapper of the
    loss (its setup and backward) and the sum's node, ~0.2 ms per step on CPU for a 256 x 10 batch, which is
    about 1% of a LeNet step. ``scale=-1`` gives the descent direction of targeted attacks for free.
    """
    _ext.require_ops()
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"ensemble_temperature_ce_grad: logits must be a [K, B, C] tensor, got {shape}")
    if not isinstance(target, Tensor):
        raise TypeError(f"ensemble_temperature_ce_grad: target must be an int64 tensor, got {type(target).__name__}")
    with torch.no_grad():
        hyper = (float(temperature), float(soft_weight), float(hard_weight))
        _, row_stats = torch.ops.robustkit.ensemble_temperature_ce(logits, target, *hyper)
        grad_loss = torch.full((logits.shape[1],), float(scale), dtype=logits.dtype, device=logits.device)
        return torch.ops.robustkit._ensemble_temperature_ce_backward(grad_loss, logits, target, row_stats, *hyper)


def _stack_logits(logits: Logits) -> Tensor:
    if isinstance(logits, Tensor):
        return logits
    if not isinstance(logits, (list, tuple)) or len(logits) == 0:
        raise TypeError("ensemble_temperature_ce: logits must be a [K, B, C] tensor or a non-empty list of "
                        f"[B, C] tensors, got {type(logits).__name__}")
    for i, z in enumerate(logits):
        if not isinstance(z, Tensor) or z.dim() != 2:
            shape = list(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"ensemble_temperature_ce: logits[{i}] must be a [B, C] tensor, got {shape}")
        if z.shape != logits[0].shape:
            raise ValueError(f"ensemble_temperature_ce: logits[{i}] has shape {list(z.shape)} but logits[0] has "
                             f"{list(logits[0].shape)}; every model must give [B, C]")
    return torch.stack(list(logits))


def _average_logits(stacked: Tensor, weights) -> Tensor:
    if stacked.dim() != 3:
        raise ValueError(f"ensemble_temperature_ce: logits must be [K, B, C], got shape {list(stacked.shape)}")
    num_models = stacked.shape[0]
    if weights is None:
        return stacked.mean(dim=0, keepdim=True)
    w = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device)
    if w.shape != (num_models,):
        raise ValueError(f"ensemble_temperature_ce: weights must have K = {num_models} entries, got shape "
                         f"{list(w.shape)}")
    return torch.einsum("k,kbc->bc", w, stacked).unsqueeze(0)


def _fake(logits, target, temperature, soft_weight, hard_weight):
    torch._check(logits.dim() == 3, lambda: f"logits must be [K, B, C], got {list(logits.shape)}")
    torch._check(target.dim() == 1 and target.shape[0] == logits.shape[1],
                 lambda: f"target must be [B] with B = {logits.shape[1]}, got {list(target.shape)}")
    num_models, batch = logits.shape[0], logits.shape[1]
    stats_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return logits.new_empty((batch,)), logits.new_empty((_NUM_ROW_STATS, num_models, batch), dtype=stats_dtype)


def _fake_backward(grad_loss, logits, target, row_stats, temperature, soft_weight, hard_weight):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    logits, target, temperature, soft_weight, hard_weight = inputs
    _, row_stats = output
    ctx.mark_non_differentiable(row_stats)
    ctx.save_for_backward(logits, target, row_stats)
    ctx.hyper = (temperature, soft_weight, hard_weight)


def _backward(ctx, grad_loss, _grad_row_stats):
    logits, target, row_stats = ctx.saved_tensors
    grad_logits = torch.ops.robustkit._ensemble_temperature_ce_backward(
        grad_loss.contiguous(), logits, target, row_stats, *ctx.hyper)
    return grad_logits, None, None, None, None


if _ext.has_ops():  # the schemas exist only when the extension is built
    torch.library.register_fake("robustkit::ensemble_temperature_ce")(_fake)
    torch.library.register_fake("robustkit::_ensemble_temperature_ce_backward")(_fake_backward)
    torch.library.register_autograd("robustkit::ensemble_temperature_ce", _backward, setup_context=_setup_context)
    register_no_double_backward("robustkit::_ensemble_temperature_ce_backward", "ensemble_temperature_ce")
