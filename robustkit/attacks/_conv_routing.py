"""Route a model's first-layer convolutions to robustkit's input-gradient kernel while an attack runs.

An attack's step is the model's forward and its backward to the input. On CPU, PyTorch's (oneDNN's) input
gradient of a convolution with one to three input channels, a network's first layer on images, is 1.2-5x
slower than :func:`robustkit.ops.conv2d_input_grad` (``bench/conv_input_grad.py``), and it is the largest
single cost of DeepFool on the MNIST LeNet (10 ms of a 57 ms backward at 256 images; the kernel takes 2 ms).
:func:`routed_convolutions` is a ``TorchFunctionMode`` that, inside the attack's model forward only, replaces each eligible
``F.conv2d`` by the same convolution whose backward computes the input gradient with that kernel. The forward
is PyTorch's own; the weight and bias gradients, if anything asks for them, are PyTorch's too; the input
gradient equals PyTorch's up to float rounding, and a double backward works through it.

Eligible: CPU tensors in float32 or float64 outside autocast, an input that requires grad, stride 1,
dilation 1, one group, numeric padding, and at most three input channels (``MAX_IN_CHANNELS``). Everything
else runs untouched. Attacks do not route at all for models that run through ``torch.compile``
(:func:`routing_applies`).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge
from torch.overrides import TorchFunctionMode

from robustkit.ops import conv2d_input_grad

_CONV2D = {F.conv2d, torch.conv2d}
#: the most input channels a routed convolution has: up to 3 the kernel measured 1.2-5x faster than oneDNN's on
#: every first-layer shape of ``bench/conv_input_grad.py``; at 4 the two were even, at 6 oneDNN was 4x faster
MAX_IN_CHANNELS = 3


def _pair(value) -> Optional[tuple]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None  # "same" / "valid" strings and anything else: not routed


def _eligible(x, weight, stride, padding, dilation, groups) -> Optional[tuple]:
    """The padding pair when this conv2d call is routed, else None."""
    if not (isinstance(x, Tensor) and isinstance(weight, Tensor) and x.requires_grad and x.dim() == 4
            and x.device.type == "cpu" and weight.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64) and weight.dtype == x.dtype and weight.dim() == 4):
        return None
    if _pair(stride) != (1, 1) or _pair(dilation) != (1, 1) or groups != 1:
        return None
    if weight.shape[1] > MAX_IN_CHANNELS:
        return None
    return _pair(padding)


class _ConvWithKernelInputGrad(torch.autograd.Function):
    """conv2d with PyTorch's forward, and a backward whose input gradient is robustkit's kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = list(padding), bias is not None
        # the nodes that would receive the weight and bias gradients, asked about in backward
        ctx.parameter_nodes = [None if t is None or not t.requires_grad else get_gradient_edge(t).node
                               for t in (weight, bias)]
        return F.conv2d(x, weight, bias, 1, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = conv2d_input_grad(grad_out.contiguous(), weight, x.shape[-2:], ctx.padding)
        # needs_input_grad only says the parameters require grad, which they do in any model; an attack's
        # torch.autograd.grad(..., inputs=x) never runs their nodes, so ask the engine, as PyTorch's convolution
        # backward does, and skip the weight gradient (as costly as the input gradient) when nobody reads it.
        want_weight, want_bias = (node is not None and torch._C._will_engine_execute_node(node)
                                  for node in ctx.parameter_nodes)
        if want_weight or want_bias:
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], ctx.padding, [1, 1],
                False, [0, 0], 1, [False, want_weight, want_bias])
        return grad_x, grad_weight, grad_bias, None


class _RouteConvolutions(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONV2D:
            bound = _conv2d_arguments(*args, **kwargs)
            padding = _eligible(*bound[:2], *bound[3:])
            # under autocast the convolution runs in bfloat16, which the kernel does not take
            if padding is not None and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu"):
                return _ConvWithKernelInputGrad.apply(bound[0], bound[1], bound[2], padding)
        return func(*args, **kwargs)


def _conv2d_arguments(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, bias, stride, padding, dilation, groups


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` or one of its submodules runs through ``torch.compile`` (``torch.compile(model)``,
    ``model.compile()``, or a forward replaced by ``torch.compile(model.forward)``)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing can be compiled
    if eval_frame is None:
        return False
    for module in model.modules():
        if isinstance(module, eval_frame.OptimizedModule) or getattr(module, "_compiled_call_impl", None) is not None:
            return True
        if hasattr(module.__dict__.get("forward"), "_torchdynamo_orig_callable"):
            return True
    return False


def routing_applies(models: Sequence[nn.Module]) -> bool:
    """Whether an attack on ``models`` routes convolutions. Not for compiled models: dynamo guards on the
    active TorchFunctionMode, so a mode entered around each forward makes it recompile on every call until it
    reaches its recompile limit (measured: 148 s for the first call), and the compiled graph would keep
    PyTorch's convolution anyway."""
    return not any(is_compiled(m) for m in models)


def routed_convolutions(enabled: bool = True):
    """Context manager: inside it, eligible ``F.conv2d`` calls (see the module docstring) get robustkit's
    input-gradient kernel in their backward. A no-op when ``enabled`` is false or while ``torch.compile`` traces
    (the compiled graph keeps PyTorch's convolution)."""
    if not enabled or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _RouteConvolutions()
