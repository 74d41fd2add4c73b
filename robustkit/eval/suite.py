"""Named attacks, model specs and data specs, as the command line spells them.

* attacks: ``fgsm``, ``pgd``, ``mifgsm``, ``dmifgsm``, ``deepfool``, ``cw`` (those robustkit provides);
* models: ``pkg.module:Factory`` (called with no arguments, or with ``--model-args`` JSON), optionally with
  ``@weights.pt`` appended; ``mnist:<arch>`` is a cached trained MNIST model of
  :func:`robustkit.models.train.trained_mnist_model`; ``a+b`` is the ensemble of ``a`` and ``b``;
* data: ``mnist`` (the shipped test split), ``cifar10:DIR`` (test split), ``imagenet:DIR`` (an ImageNet-style
  folder; ``classes.txt`` in ``DIR`` or its parent gives the class index).

Every failure raises :class:`SpecError` with a one-line message naming the offending argument.
"""
from __future__ import annotations

import importlib
import json
import pathlib
from fractions import Fraction
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from robustkit import attacks as A


class SpecError(ValueError):
    """A command-line value that cannot be used; the message is shown to the user as is."""


class MeanLogits(nn.Module):
    """An ensemble as one classifier: the mean of its members' logits."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


# ---- numbers --------------------------------------------------------------------------------------------

def parse_eps(text: str, argument: str = "--eps") -> List[float]:
    """``"8/255"`` -> [0.0314]; ``"0.1,0.2"`` -> [0.1, 0.2] (a sweep, one run per value)."""
    values = []
    for part in str(text).split(","):
        try:
            value = float(Fraction(part.strip()))
        except (ValueError, ZeroDivisionError):
            raise SpecError(f"{argument}: expected a number or fraction such as 0.3 or 8/255, got {part!r}") from None
        if value < 0:
            raise SpecError(f"{argument}: must be >= 0, got {part!r}")
        values.append(value)
    return values


# ---- attacks --------------------------------------------------------------------------------------------

def _minimal_norm_attack(class_names: Sequence[str]) -> Optional[type]:
    """The attack class under any of ``class_names`` in robustkit.attacks or one of its modules."""
    for name in class_names:
        if hasattr(A, name):
            return getattr(A, name)
    for module_name in ATTACK_MODULES:
        try:
            module = importlib.import_module(f"robustkit.attacks.{module_name}")
        except ImportError:
            continue
        for name in class_names:
            if hasattr(module, name):
                return getattr(module, name)
    return None


def _build(name: str, models: List[nn.Module], eps: Optional[float], steps: Optional[int]):
    one = {"model": models[0]} if len(models) == 1 else {"models": models}
    if name == "fgsm":
        return A.FGSM(**one, eps=eps)
    if name == "pgd":
        steps = steps or 10
        return A.PGD(**one, eps=eps, steps=steps, step_size=2.5 * eps / steps)
    if name == "mifgsm":
        return A.MIFGSM(**one, eps=eps, steps=steps or 10)
    if name == "dmifgsm":
        return A.DMIFGSM(models, eps=eps, steps=steps or 20)
    cls = _minimal_norm_attack(MINIMAL_NORM_CLASSES[name])
    kwargs = {} if steps is None else {"steps": steps}
    if name == "cw" and hasattr(cls, "fast"):
        # C&W's paper budget (9 x 10,000 Adam steps) is for measuring minimal distances in a paper;
        # the command line uses its documented fast schedule (5 x 100), --steps sets the iterations per round
        return cls.fast(**one, **kwargs)
    return cls(**one, **kwargs)


#: Attacks found by name in robustkit.attacks (the minimal-norm ones by any of their class names).
MINIMAL_NORM_CLASSES = {"deepfool": ("DeepFool",), "cw": ("CarliniWagnerL2", "CWL2", "CW")}
ATTACK_MODULES = ("deepfool", "cw", "carlini_wagner")
FIXED_EPS_ATTACKS = ("fgsm", "pgd", "mifgsm", "dmifgsm")
ATTACK_NAMES = FIXED_EPS_ATTACKS + tuple(MINIMAL_NORM_CLASSES)


def available_attacks() -> List[str]:
    return [n for n in ATTACK_NAMES if n in FIXED_EPS_ATTACKS or _minimal_norm_attack(MINIMAL_NORM_CLASSES[n])]


def make_attacks(names: Sequence[str], models: List[nn.Module], eps: Sequence[float], steps: Optional[int]
                 ) -> Dict[str, A.Attack]:
    """``{run name: attack}``: each fixed-budget attack once per eps (named ``pgd@0.1`` when there are
    several), each minimal-norm attack once."""
    available = available_attacks()
    out: Dict[str, A.Attack] = {}
    for name in names:
        if name not in ATTACK_NAMES:
            raise SpecError(f"--attack: unknown attack {name!r}; choose from {', '.join(ATTACK_NAMES)}")
        if name not in available:
            raise SpecError(f"--attack: {name!r} is not available in this robustkit build "
                            f"(available: {', '.join(available)})")
        if name in FIXED_EPS_ATTACKS:
            for e in eps:
                out[name if len(eps) == 1 else f"{name}@{e:g}"] = _build(name, models, e, steps)
        else:
            out[name] = _build(name, models, None, steps)
    return out


# ---- models ---------------------------------------------------------------------------------------------

def _factory(text: str, model_args: Optional[dict]) -> nn.Module:
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise SpecError(f"--model: expected pkg.module:Factory, got {text!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecError(f"--model: cannot import {module_name!r} ({error})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SpecError(f"--model: {module_name!r} has no callable {attr!r}")
    try:
        model = factory(**(model_args or {}))
    except TypeError as error:
        raise SpecError(f"--model: {text}(**{model_args or {}}) failed: {error}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"--model: {text} returned {type(model).__name__}, not an nn.Module")
    return model


def load_weights(model: nn.Module, path: str, argument: str = "--weights") -> nn.Module:
    """Loads a state dict (``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` wrapper is accepted)."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise SpecError(f"{argument}: no file {path!r}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:   # unpickling errors have many types; all mean "not a weights file"
        raise SpecError(f"{argument}: {path!r} is not a loadable state dict ({type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SpecError(f"{argument}: {path!r} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise SpecError(f"{argument}: {path!r} does not match {type(model).__name__}: {detail}") from None
    return model


def make_model(spec: str, *, weights: Optional[str] = None, model_args: Optional[str] = None) -> nn.Module:
    """A model from ``pkg.module:Factory[@weights.pt]`` / ``mnist:<arch>`` / ``a+b`` (an ensemble)."""
    parts = spec.split("+")
    if len(parts) > 1:
        return MeanLogits([make_model(p) for p in parts])
    args = None
    if model_args:
        try:
            args = json.loads(model_args)
        except json.JSONDecodeError:
            raise SpecError(f"--model-args: not valid JSON: {model_args!r}") from None
    if spec.startswith("mnist:"):
        from robustkit.models import MNIST_MODELS
        from robustkit.zoo import trained_mnist_model
        arch = spec.split(":", 1)[1]
        if arch not in MNIST_MODELS:
            raise SpecError(f"model: mnist:<arch> needs one of {', '.join(MNIST_MODELS)}, got {arch!r}")
        return trained_mnist_model(arch, progress=False)
    factory, _, inline_weights = spec.partition("@")
    model = _factory(factory, args)
    weights = weights or inline_weights or None
    return (load_weights(model, weights) if weights else model).eval()


def members(model: nn.Module) -> List[nn.Module]:
    return list(model.members) if isinstance(model, MeanLogits) else [model]


# ---- data -----------------------------------------------------------------------------------------------

def make_data(spec: str, *, image_size: Optional[int] = None):
    """``mnist`` | ``cifar10:DIR`` | ``imagenet:DIR`` -> a Dataset of (image in [0, 1], label)."""
    from robustkit import datasets
    kind, _, root = spec.partition(":")
    try:
        if kind == "mnist":
            return datasets.mnist("test", root=root or None)
        if kind == "cifar10" and root:
            return datasets.cifar10(root, split="test")
        if kind == "imagenet" and root:
            folder = pathlib.Path(root)
            classes = next((p for p in (folder / "classes.txt", folder.parent / "classes.txt") if p.is_file()), None)
            sizes = {} if image_size is None else {"crop_size": image_size, "resize_size": max(image_size,
                                                                                                image_size * 8 // 7)}
            return datasets.imagenet_folder(root, classes_file=classes, **sizes)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        raise SpecError(f"--data: {error}") from None
    raise SpecError(f"--data: expected mnist, cifar10:DIR or imagenet:DIR, got {spec!r}")



__all__ = ["SpecError", "MeanLogits", "parse_eps", "make_attacks", "available_attacks", "make_model",
           "load_weights", "make_data", "members", "ATTACK_NAMES"]
