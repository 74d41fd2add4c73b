"""The training objective contract: ``objective(model, x, y) -> ObjectiveOutput``.

An objective turns one batch into the loss the optimizer minimises. It is a plain callable so that it works
the same inside :func:`robustkit.training.fit` and inside a loop the user wrote::

    out = objective(model, x, y)
    optimizer.zero_grad(); out.loss.backward(); optimizer.step()

Objectives that must drive the optimizer several times per batch (free adversarial training replays each
batch m times, reusing one backward for the weights and the perturbation) also expose
``passes(model, x, y)``: a generator yielding one :class:`ObjectiveOutput` per optimizer step; the caller runs
backward and the step between yields, and the generator reads what that backward left (e.g. the
perturbation's gradient) when it resumes. :func:`objective_passes` gives every objective that shape, so a
loop written once handles both kinds.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, Protocol, Union, runtime_checkable

import torch
from torch import Tensor, nn

# the one image validator of the library (dtype, shape, finite, [0, 1]); re-exported for the training layer
from robustkit.attacks.base import check_images

Metric = Union[float, Tensor]


@dataclass
class ObjectiveOutput:
    """What an objective returns for one batch.

    Attributes:
        loss: a scalar tensor to call ``backward()`` on (the mean over the batch).
        logits: ``[B, num_classes]`` logits the loss was computed on, for the *training* input (the adversarial
            images for adversarial training, the clean ones for plain cross-entropy); detached or not.
        metrics: detached floats or 0-dim tensors to log, e.g. ``{"clean_loss": ..., "adv_loss": ...}``.
    """

    loss: Tensor
    logits: Tensor
    metrics: Dict[str, Metric] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """Any callable ``objective(model, x, y) -> ObjectiveOutput``: ``model`` is the module to train (possibly
    a ``DistributedDataParallel`` wrapper; use :func:`unwrap_model` for the bare module), ``x`` images in
    [0, 1] ``[B, C, H, W]``, ``y`` int64 labels ``[B]``."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput: ...


class CrossEntropy:
    """Plain cross-entropy on the clean images: what ``fit(objective=None)`` trains with."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        return ObjectiveOutput(loss=loss, logits=logits, metrics={})

    def __repr__(self) -> str:
        return "CrossEntropy()"


def objective_passes(objective: Objective, model: nn.Module, x: Tensor, y: Tensor) -> Iterator[ObjectiveOutput]:
    """The optimizer passes of ``objective`` on one batch: ``objective.passes(model, x, y)`` when it has one,
    else the single output of ``objective(model, x, y)``. The caller runs backward and the optimizer step on
    each output before asking for the next."""
    passes = getattr(objective, "passes", None)
    if passes is not None:
        yield from passes(model, x, y)
    else:
        yield objective(model, x, y)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or ``model`` itself).
    Attacks are bound to the bare module: running a DDP wrapper's forward without a weight backward would
    leave its gradient reducer waiting."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


ATTACK_MODES = ("eval", "train")


def check_attack_mode(owner: str, attack_mode: str) -> str:
    if attack_mode not in ATTACK_MODES:
        raise ValueError(f"{owner}: attack_mode must be one of {ATTACK_MODES}, got {attack_mode!r}")
    return attack_mode


@contextlib.contextmanager
def generation_mode(model: nn.Module, attack_mode: str = "eval"):
    """While adversarial examples are generated: every module of ``model`` in eval mode (BatchNorm uses and
    keeps its running statistics, dropout is off), so the attack's many forwards neither update BatchNorm's
    statistics nor see a different random network each step; afterwards each module's own mode is restored
    (a model may mix train and eval submodules). ``attack_mode="train"`` leaves the modes alone (the model
    is attacked as it trains; BatchNorm statistics then also move with each attack forward)."""
    if attack_mode == "train":
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


__all__ = ["ObjectiveOutput", "Objective", "CrossEntropy", "objective_passes", "unwrap_model", "generation_mode",
           "check_attack_mode", "check_images", "ATTACK_MODES"]
