"""BPDA, Backward Pass Differentiable Approximation (Athalye, Carlini and Wagner 2018, Sec. 4.1): attack through a
non-differentiable (or gradient-shattering) preprocessing step by running it exactly on the forward pass and
differentiating a smooth approximation of it on the backward pass."""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

Transform = Union[nn.Module, Callable[[Tensor], Tensor]]


class _BPDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, module: "BPDA") -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            out = module.preprocess(x)
        if not isinstance(out, Tensor):
            raise TypeError(f"BPDA: preprocess must return a Tensor, got {type(out).__name__}")
        if module.approx is None and out.shape != x.shape:
            raise ValueError(f"BPDA: with approx=None (identity) preprocess must keep the shape {list(x.shape)}, "
                             f"got {list(out.shape)}; pass an approx with preprocess's output shape")
        ctx.module = module
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        approx = ctx.module.approx
        if approx is None:
            return grad_out, None
        with torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            approx_out = approx(x_var)
            if approx_out.shape != grad_out.shape:
                raise ValueError(f"BPDA: approx must return preprocess's output shape {list(grad_out.shape)}, "
                                 f"got {list(approx_out.shape)}")
            # the input gradient only: the approximation's parameters get no .grad
            (grad_in,) = torch.autograd.grad(approx_out, x_var, grad_out)
        return grad_in, None


class BPDA(nn.Module):
    """``BPDA(preprocess, approx=None)``: forward ``preprocess(x)`` exactly; backward the vector-Jacobian product
    of ``approx`` at ``x`` (``None``: the identity, the straight-through estimator the paper uses for JPEG,
    bit-depth reduction and other ``g(x) ≈ x`` preprocessors).

    Put it in front of the classifier, ``nn.Sequential(BPDA(jpeg), classifier)``, and any gradient attack
    (PGD, APGD, ...) attacks the defended model end to end. Only the input gradient of ``approx`` is taken;
    its parameters are never written.

    Example::

        >>> quantise = lambda x: torch.round(x * 7) / 7          # gradient zero almost everywhere
        >>> defended = nn.Sequential(BPDA(quantise), classifier)
        >>> x_adv = PGD(defended, eps=0.3, steps=40)(x, y)
    """

    def __init__(self, preprocess: Transform, approx: Optional[Transform] = None):
        super().__init__()
        if not callable(preprocess):
            raise TypeError(f"BPDA: preprocess must be an nn.Module or a callable, got {type(preprocess).__name__}")
        if approx is not None and not callable(approx):
            raise TypeError(f"BPDA: approx must be None (identity), an nn.Module or a callable, got "
                            f"{type(approx).__name__}")
        self.preprocess = preprocess
        self.approx = approx

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return self.preprocess(x)
        return _BPDAFunction.apply(x, self)
