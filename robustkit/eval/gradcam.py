"""Grad-CAM (Selvaraju et al. 2017), used by the report to compare what a model looks at on clean and on
adversarial images (Defendr section 6.3)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def last_conv_layer(model: nn.Module) -> Optional[nn.Module]:
    """The last ``nn.Conv2d`` in registration order (the usual Grad-CAM layer), or None."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def grad_cam(model: nn.Module, x: Tensor, class_index: Optional[Tensor] = None,
             layer: Optional[nn.Module] = None) -> Optional[Tensor]:
    """Grad-CAM heat maps ``[B, H, W]`` in [0, 1] at the input resolution, for ``class_index`` (default: the
    predicted class).

    With ``A^k`` the activations of ``layer`` (default :func:`last_conv_layer`) and ``y^c`` the class score,
    ``L^c = ReLU(sum_k alpha_k^c A^k)`` with ``alpha_k^c`` the spatial mean of ``dy^c / dA^k`` (Eq. 1-2 of
    the Grad-CAM paper), bilinearly upsampled and divided by its maximum. Returns None for a model without
    a convolution. The model's parameters and their gradients are left untouched."""
    layer = layer if layer is not None else last_conv_layer(model)
    if layer is None:
        return None
    captured = {}

    def hook(_module, _inputs, output):
        captured["activation"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            # the input requires grad so that the activation is in the graph when every parameter is frozen
            logits = model(x.detach().requires_grad_(True))
            activation = captured["activation"]                                    # [B, K, h, w]
            if class_index is None:
                class_index = logits.argmax(dim=1)
            score = logits.gather(1, class_index.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)                                  # [B, K, 1, 1]
    cam = F.relu((weights * activation.detach()).sum(dim=1, keepdim=True))         # [B, 1, h, w]
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak


__all__ = ["grad_cam", "last_conv_layer"]
