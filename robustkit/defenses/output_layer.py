"""Growing a classifier's output layer by new classes (the retraining seed's fooling-image classes).

The retraining seed (Thakur et al., Sec. 3.1) gives images far from every training image one new class, or
several found by clustering, and retrains with them: the classifier needs one more output per new class.
:func:`widen_output_layer` returns a copy of the classifier whose final ``nn.Linear`` has ``extra`` more
outputs; the old rows are copied, so the old classes' logits are unchanged until training moves them.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import Tensor, nn


def find_output_layer(model: nn.Module, num_classes: Optional[int] = None) -> tuple[str, nn.Linear]:
    """The qualified name and module of the classifier's final ``nn.Linear``: the last one registered (module
    order is definition order, and the output layer is defined last in Sequential stacks, LeNet, ResNet, VGG),
    among those with ``out_features == num_classes`` when that is given. Raises ValueError naming the model when
    there is none."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and (num_classes is None or m.out_features == num_classes)]
    if not found:
        wanted = "nn.Linear" + ("" if num_classes is None else f" with out_features == {num_classes}")
        raise ValueError(f"widen_output_layer: {type(model).__name__} has no {wanted} to widen; the classifier's "
                         "last layer must be an nn.Linear producing the logits (wrap other heads in one)")
    return found[-1]


def widen_output_layer(model: nn.Module, extra: int, *, num_classes: Optional[int] = None,
                       probe: Optional[Tensor] = None, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` whose output layer (:func:`find_output_layer`) has ``extra`` more outputs.

    The old weight rows and biases are copied exactly, so the first ``out_features`` logits of the copy equal
    the model's for every input. The new rows get ``nn.Linear``'s own default initialisation
    (U(-1/sqrt(in), 1/sqrt(in)) for weights and bias), drawn from a generator seeded with ``seed``.
    ``model`` is not modified. With ``probe`` (a small input batch) the copy is run once to check that its
    output really grew by ``extra`` columns, i.e. that the layer found is the one producing the logits.
    """
    if isinstance(extra, bool) or not isinstance(extra, int) or extra < 1:
        raise ValueError(f"widen_output_layer: extra must be a positive int, got {extra!r}")
    name, old = find_output_layer(model, num_classes)
    wide = nn.Linear(old.in_features, old.out_features + extra, bias=old.bias is not None,
                     device=old.weight.device, dtype=old.weight.dtype)
    bound = 1 / math.sqrt(old.in_features) if old.in_features else 0.0
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        wide.weight[:old.out_features] = old.weight
        wide.weight[old.out_features:] = (torch.rand(extra, old.in_features, generator=g, dtype=torch.float64)
                                          * 2 - 1).mul_(bound).to(wide.weight)
        if old.bias is not None:
            wide.bias[:old.out_features] = old.bias
            wide.bias[old.out_features:] = (torch.rand(extra, generator=g, dtype=torch.float64)
                                            * 2 - 1).mul_(bound).to(wide.bias)
    wide.weight.requires_grad_(old.weight.requires_grad)
    if old.bias is not None:
        wide.bias.requires_grad_(old.bias.requires_grad)
    out = copy.deepcopy(model)
    if not name:
        raise ValueError("widen_output_layer: the model itself is an nn.Linear; widen it by wrapping it in "
                         "nn.Sequential")
    out.set_submodule(name, wide)
    if probe is not None:
        was_training = out.training
        out.eval()
        with torch.no_grad():
            width = out(probe).shape[-1]
        out.train(was_training)
        if width != old.out_features + extra:
            raise ValueError(f"widen_output_layer: widened {name!r} ({old.out_features} -> "
                             f"{old.out_features + extra} outputs) but {type(model).__name__} now returns {width} "
                             "columns; that layer is not the one producing the logits")
    return out

