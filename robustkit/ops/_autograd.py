"""Shared registration helpers of the op wrappers."""
from __future__ import annotations

import torch


def register_no_double_backward(backward_op: str, forward_op: str) -> None:
    """Makes differentiating ``backward_op`` (the backward kernel of ``forward_op``) raise a clear error.

    Without an autograd formula, PyTorch only warns ("an autograd kernel was not registered ...") and treats
    the backward kernel as a constant, so a gradient of the gradient comes out silently zero.
    """
    message = (f"{backward_op}: double backward (gradients of the gradient) of {forward_op} is not supported; "
               "its backward is a fused kernel without a derivative")

    def _raise(ctx, *grads):
        raise RuntimeError(message)

    torch.library.register_autograd(backward_op, _raise, setup_context=lambda ctx, inputs, output: None)
