"""Target selection for targeted attacks: explicit tensors, the least-likely class, random classes."""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

TargetSpec = Union[None, Tensor, str, Callable[[Tensor, Tensor], Tensor]]
_NAMED = ("least_likely", "random")


def least_likely(logits: Tensor, y: Tensor) -> Tensor:
    """The class the model finds least likely for each sample (the retraining seed's target)."""
    return logits.argmin(dim=1)


def random_other(logits: Tensor, y: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """A uniformly random class different from the true label, per sample."""
    num_classes = logits.shape[1]
    offset = torch.randint(1, num_classes, y.shape, device=y.device, generator=generator)
    return (y + offset) % num_classes


def resolve_target(spec: TargetSpec, x: Tensor, y: Tensor, clean_logits: Optional[Tensor], *,
                   generator: Optional[torch.Generator] = None, name: str = "attack") -> Optional[Tensor]:
    """Turns a target specification into an int64 ``[B]`` tensor (or None for untargeted); integer tensors of any
    width are widened to int64."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"{name}: target must be None, a tensor, a callable or one of {_NAMED}, got {spec!r}")
        if clean_logits is None:
            return y.new_empty((0,))
        return least_likely(clean_logits, y) if spec == "least_likely" else random_other(clean_logits, y, generator)
    if callable(spec) and not isinstance(spec, Tensor):
        target = spec(clean_logits, y) if clean_logits is not None else y.new_empty((0,))
    else:
        target = spec
    if not isinstance(target, Tensor) or target.shape != y.shape or target.is_floating_point() \
            or target.is_complex() or target.dtype == torch.bool:
        got = f"{target.dtype} {list(target.shape)}" if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"{name}: target must be an integer [B] tensor with B = {y.shape[0]} (int64, or any "
                         f"integer dtype), got {got}")
    target = target.long()
    if target.device != y.device:
        raise ValueError(f"{name}: target must be on {y.device}, got {target.device}")
    if target.numel() and target.min() < 0:
        raise ValueError(f"{name}: target classes must be >= 0, got {target.min().item()}")
    if target.numel() and clean_logits is not None and target.max() >= clean_logits.shape[1]:
        raise ValueError(f"{name}: target classes must be < {clean_logits.shape[1]}, got {target.max().item()}")
    if target.numel() and bool((target == y).any()):
        raise ValueError(f"{name}: target equals the true label for sample {int((target == y).nonzero()[0])}; "
                         "a targeted attack toward the true class is meaningless")
    return target
