"""The input gradient of a stride-1 2-D convolution as one op, for the convolutions whose PyTorch CPU
(oneDNN) backward is slow: few input channels, as in a network's first layer.

Attacks spend most of their time in the model's backward to the input. On the MNIST LeNet on CPU, the first
conv's input gradient (1 input channel) took 10 ms per 256 images against 2.7 ms for its forward; this op
takes about 3 ms (``bench/conv_input_grad.py``). The attacks route eligible convolutions here through
:mod:`robustkit.attacks._conv_routing`.
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch
from torch import Tensor

from robustkit import _ext  # registers torch.ops.robustkit when the extension is built


def conv2d_input_grad(grad_output: Tensor, weight: Tensor, input_size: Sequence[int],
                      padding: Sequence[int] = (0, 0)) -> Tensor:
    """``grad_input`` of ``y = conv2d(x, weight, padding=padding)`` (stride 1, dilation 1, one group)::

        grad_input[b, ci, y, x] = sum_{co, u, v} grad_output[b, co, y + ph - u, x + pw - v] * weight[co, ci, u, v]

    the same as ``torch.ops.aten.convolution_backward(...)[0]`` up to float rounding, differentiable with
    respect to ``grad_output`` and ``weight`` (a double backward through a model's input gradient, as
    Deep Defense needs, works through it).

    Args:
        grad_output: ``[B, C_out, OH, OW]`` float32 or float64.
        weight: ``[C_out, C_in, KH, KW]``, same dtype and device.
        input_size: ``(H, W)`` of the convolution's input; ``OH = H + 2 ph - KH + 1`` must hold, and the
            plane ``[OH, OW]`` must be non-empty (as a convolution's output always is).
        padding: ``(ph, pw)``, each >= 0. H, W and the padding are at most 2^31 - 1.

    Returns:
        ``[B, C_in, H, W]`` in ``grad_output``'s dtype.

    Example::

        >>> x = torch.randn(8, 1, 28, 28); w = torch.randn(6, 1, 5, 5)
        >>> g = torch.randn(8, 6, 28, 28)
        >>> conv2d_input_grad(g, w, (28, 28), (2, 2)).shape
        torch.Size([8, 1, 28, 28])
    """
    _ext.require_ops()
    if not isinstance(grad_output, Tensor) or not isinstance(weight, Tensor):
        raise TypeError("conv2d_input_grad: grad_output and weight must be tensors, got "
                        f"{type(grad_output).__name__} and {type(weight).__name__}")
    return torch.ops.robustkit.conv2d_input_grad(grad_output, weight, _int_pair("input_size", input_size),
                                                 _int_pair("padding", padding))


def _int_pair(name: str, value) -> list:
    """``value`` as a list of Python ints, or a one-line error naming ``name`` (a bare ``int()`` would say only
    "invalid literal for int()", and would silently truncate a float). The op checks the length and range."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"conv2d_input_grad: {name} must be a pair of ints (height, width), got {value!r}")
    pair = []
    for item in value:
        if isinstance(item, bool):
            raise TypeError(f"conv2d_input_grad: {name} must be a pair of ints (height, width), got {value!r}")
        try:
            pair.append(operator.index(item))
        except TypeError:
            raise TypeError(f"conv2d_input_grad: {name} must be a pair of ints (height, width), got "
                            f"{value!r}") from None
    return pair


def _fake(grad_output, weight, input_size, padding):
    torch._check(grad_output.dim() == 4, lambda: f"conv2d_input_grad: grad_output must be [B, C_out, OH, OW], "
                                                 f"got {list(grad_output.shape)}")
    torch._check(weight.dim() == 4, lambda: f"conv2d_input_grad: weight must be [C_out, C_in, KH, KW], "
                                            f"got {list(weight.shape)}")
    return grad_output.new_empty((grad_output.shape[0], weight.shape[1], input_size[0], input_size[1]))


def _setup_context(ctx, inputs, output):
    grad_output, weight, input_size, padding = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.padding = list(padding)


def _backward(ctx, grad):
    """The op is linear in each argument: <v, op(g, w)> = <conv2d(v, w), g>, so d/dg is the convolution of v,
    and d/dw is the convolution's weight gradient with v as its input and g as its output gradient."""
    grad_output, weight = ctx.saved_tensors
    d_grad_output = d_weight = None
    if ctx.needs_input_grad[0]:
        d_grad_output = torch.nn.functional.conv2d(grad, weight, padding=ctx.padding)
    if ctx.needs_input_grad[1]:
        d_weight = torch.ops.aten.convolution_backward(grad_output, grad, weight, None, [1, 1], ctx.padding, [1, 1],
                                                       False, [0, 0], 1, [False, True, False])[1]
    return d_grad_output, d_weight, None, None


if _ext.has_ops():  # the schemas exist only when the extension is built
    torch.library.register_fake("robustkit::conv2d_input_grad")(_fake)
    torch.library.register_fake("robustkit::_conv2d_input_grad_math")(_fake)
    torch.library.register_autograd("robustkit::conv2d_input_grad", _backward, setup_context=_setup_context)
