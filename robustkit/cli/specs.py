"""Named attacks, model specs and data specs, as the command line spells them.

* attacks: ``fgsm``, ``pgd``, ``mifgsm``, ``dmifgsm``, ``deepfool``, ``cw``, ``apgd-ce``, ``apgd-t``,
  ``square``, ``fab``, ``autoattack`` (:data:`ATTACKS`);
* models: ``pkg.module:Factory`` (called with no arguments, or with ``--model-args`` JSON), optionally with
  ``@weights.pt`` appended; ``mnist:<arch>`` is a cached trained MNIST model of
  :func:`robustkit.zoo.trained_mnist_model` (with weights given, the untrained architecture loads them
  instead); ``a+b`` is the :class:`robustkit.nn.Ensemble` of ``a`` and ``b``;
* data: ``mnist`` (the shipped splits), ``cifar10:DIR``, ``imagenet:DIR`` (an ImageNet-style folder;
  ``classes.txt`` in ``DIR`` or its parent gives the class index).

Every failure raises :class:`SpecError` with a one-line message naming the offending argument. The module
imports torch only inside its functions, so ``robustkit --help`` can list the attack names quickly.
"""
from __future__ import annotations

import importlib
import json
import pathlib
from fractions import Fraction
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

if TYPE_CHECKING:   # pragma: no cover
    from torch import nn


class SpecError(ValueError):
    """A command-line value that cannot be used; the message is shown to the user as is."""


#: The attacks the command line knows: name -> class name in :mod:`robustkit.attacks`.
ATTACKS = {"fgsm": "FGSM", "pgd": "PGD", "mifgsm": "MIFGSM", "dmifgsm": "DMIFGSM", "deepfool": "DeepFool",
           "cw": "CW", "apgd-ce": "APGD", "apgd-t": "APGDT", "square": "Square", "fab": "FAB",
           "autoattack": "AutoAttack"}
ATTACK_NAMES = tuple(ATTACKS)
#: Default iterations of the iterative fixed-budget attacks when ``--steps`` is not given.
DEFAULT_STEPS = {"pgd": 10, "mifgsm": 10, "dmifgsm": 20}
TARGETS = ("least_likely", "random")


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

def attack_class(name: str) -> type:
    """The attack class of command-line name ``name``."""
    if name not in ATTACKS:
        raise SpecError(f"--attack: unknown attack {name!r}; choose from {', '.join(ATTACK_NAMES)}")
    from robustkit import attacks
    return getattr(attacks, ATTACKS[name])


def is_minimal_norm(name: str) -> bool:
    """Whether attack ``name`` searches the smallest perturbation (no ``--eps``) rather than a fixed budget."""
    from robustkit.attacks import MinimalNormAttack
    return issubclass(attack_class(name), MinimalNormAttack)


def build_attack(name: str, model: "nn.Module", eps: Optional[float], steps: Optional[int]):
    """One attack of command-line name ``name`` on ``model`` (a model or an :class:`~robustkit.nn.Ensemble`,
    which the attack sees member by member)."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise SpecError(f"--steps: must be an integer >= 1, got {steps!r}")
    cls = attack_class(name)
    one = {"model": model}
    if name == "fgsm":   # a single step: --steps is for the other attacks of the suite (make_attacks checks)
        return cls(**one, eps=eps)
    if name in DEFAULT_STEPS:
        steps = DEFAULT_STEPS[name] if steps is None else steps
        if name == "pgd":
            return cls(**one, eps=eps, steps=steps, step_size=2.5 * eps / steps)
        return cls(**one, eps=eps, steps=steps)
    kwargs = {} if steps is None else {"steps": steps}
    if name == "autoattack":   # a fixed suite: --steps does not apply
        return cls(**one, eps=eps)
    if name == "square":       # --steps is the query budget
        return cls(**one, eps=eps, **({} if steps is None else {"queries": steps}))
    if name in ("apgd-ce", "apgd-t"):
        return cls(**one, eps=eps, **kwargs)
    if name == "cw":
        # C&W's paper budget (9 x 10,000 Adam steps) is for measuring minimal distances in a paper;
        # the command line uses its documented fast schedule (5 x 100), --steps sets the iterations per round
        return cls.fast(**one, **kwargs)
    return cls(**one, **kwargs)


def make_attacks(names: Sequence[str], model: "nn.Module", eps: Sequence[float], steps: Optional[int]) -> Dict:
    """``{run name: attack}``: each fixed-budget attack once per eps (named ``pgd@0.1`` when there are
    several), each minimal-norm attack once."""
    if steps is not None and names and all(n == "fgsm" for n in names):
        raise SpecError("--steps: fgsm takes a single step; leave --steps out (or use pgd / mifgsm)")
    out: Dict = {}
    for name in names:
        if is_minimal_norm(name):
            out[name] = build_attack(name, model, None, steps)
        else:
            for e in eps:
                out[name if len(eps) == 1 else f"{name}@{e:g}"] = build_attack(name, model, e, steps)
    return out


# ---- models ---------------------------------------------------------------------------------------------

def _factory(text: str, model_args: Optional[dict]) -> "nn.Module":
    from torch import nn
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise SpecError(f"--model: expected pkg.module:Factory, mnist:<arch> or a+b, got {text!r}")
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


def _key_list(keys: Sequence[str], most: int = 4) -> str:
    shown = ", ".join(list(keys)[:most])
    return shown + (f" (+{len(keys) - most} more)" if len(keys) > most else "")


def load_weights(model: "nn.Module", path: str, argument: str = "--weights") -> "nn.Module":
    """Loads a state dict (``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` wrapper is accepted).
    A state dict that does not match ``model`` is an error naming its missing and unexpected keys."""
    import torch
    file = pathlib.Path(path)
    if not file.is_file():
        raise SpecError(f"{argument}: no file {path!r}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:   # unpickling errors have many types; all mean "not a weights file"
        raise SpecError(f"{argument}: {path!r} is not a loadable state dict ({type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise SpecError(f"{argument}: {path!r} holds a {type(state).__name__}, not a state dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing keys: {_key_list(missing)}"] if missing else []) + \
                ([f"unexpected keys: {_key_list(unexpected)}"] if unexpected else [])
        raise SpecError(f"{argument}: {path!r} does not match {type(model).__name__}: {'; '.join(parts)}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.shape != expected[key].shape:
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise SpecError(f"{argument}: {path!r} does not match {type(model).__name__}: {key} has shape {got}, "
                            f"the model's is {list(expected[key].shape)}")
    model.load_state_dict(state)
    return model


def _model_args(text: Optional[str]) -> Optional[dict]:
    if not text:
        return None
    try:
        args = json.loads(text)
    except json.JSONDecodeError:
        raise SpecError(f"--model-args: not valid JSON: {text!r}") from None
    if not isinstance(args, dict):
        raise SpecError(f"--model-args: expected a JSON object of keyword arguments, got {text!r}")
    return args


def _single_model(spec: str, model_args: Optional[dict], weights: Optional[str]) -> "nn.Module":
    base, _, inline = spec.partition("@")
    if inline and weights:
        raise SpecError(f"--weights: {spec!r} already names its weights after '@'; give one or the other")
    weights = weights or inline or None
    if base.startswith("mnist:"):
        import torch

        from robustkit.models import MNIST_MODELS
        arch = base.split(":", 1)[1]
        if arch not in MNIST_MODELS:
            raise SpecError(f"--model: mnist:<arch> needs one of {', '.join(MNIST_MODELS)}, got {arch!r}")
        if model_args:
            raise SpecError("--model-args: mnist:<arch> takes no arguments (use robustkit.models:<Class>)")
        if weights:   # the user's weights, loaded into the untrained architecture
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return load_weights(MNIST_MODELS[arch](), weights).eval()
        from robustkit.zoo import trained_mnist_model
        return trained_mnist_model(arch, progress=False)
    model = _factory(base, model_args)
    return (load_weights(model, weights) if weights else model).eval()


def make_model(spec: str, *, weights: Optional[str] = None, model_args: Optional[str] = None) -> "nn.Module":
    """A model from ``pkg.module:Factory[@weights.pt]`` / ``mnist:<arch>[@weights.pt]`` / ``a+b`` (an
    :class:`~robustkit.nn.Ensemble`). ``weights`` applies to the whole spec: for ``a+b`` it is a state dict
    of the ensemble (keys ``members.<k>.…``); members may instead carry their own ``@weights``."""
    args = _model_args(model_args)
    parts = spec.split("+")
    if len(parts) == 1:
        return _single_model(spec, args, weights)
    if any(not p for p in parts):
        raise SpecError(f"--model: empty member in ensemble spec {spec!r}")
    from robustkit.nn import Ensemble
    ensemble = Ensemble([_single_model(p, args, None) for p in parts])
    return (load_weights(ensemble, weights) if weights else ensemble).eval()


def has_weights(spec: str, weights: Optional[str]) -> bool:
    """Whether every model of ``spec`` gets trained weights (from ``weights``, ``@file`` or the zoo)."""
    return bool(weights) or all("@" in p or p.startswith("mnist:") for p in spec.split("+"))


# ---- data -----------------------------------------------------------------------------------------------

def make_data(spec: str, *, split: str = "test", image_size: Optional[int] = None):
    """``mnist`` | ``cifar10:DIR`` | ``imagenet:DIR`` -> a Dataset of (image in [0, 1], label)."""
    from robustkit import datasets
    kind, _, root = spec.partition(":")
    try:
        if kind == "mnist":
            return datasets.mnist(split, root=root or None)
        if kind == "cifar10" and root:
            return datasets.cifar10(root, split=split)
        if kind == "imagenet" and root:
            if split != "test":
                raise SpecError(f"--data: imagenet:DIR is a folder of evaluation images; no {split} split")
            folder = pathlib.Path(root)
            classes = next((p for p in (folder / "classes.txt", folder.parent / "classes.txt") if p.is_file()), None)
            sizes = {} if image_size is None else {"crop_size": image_size, "resize_size": max(image_size,
                                                                                                image_size * 8 // 7)}
            return datasets.imagenet_folder(root, classes_file=classes, **sizes)
    except (FileNotFoundError, NotADirectoryError) as error:
        raise SpecError(f"--data: {error}") from None
    except ValueError as error:
        if isinstance(error, SpecError):
            raise
        raise SpecError(f"--data: {error}") from None
    raise SpecError(f"--data: expected mnist, cifar10:DIR or imagenet:DIR, got {spec!r}")


__all__ = ["SpecError", "ATTACKS", "ATTACK_NAMES", "TARGETS", "parse_eps", "attack_class", "is_minimal_norm",
           "build_attack", "make_attacks", "make_model", "load_weights", "has_weights", "make_data"]
