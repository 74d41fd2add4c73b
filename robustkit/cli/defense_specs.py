"""``--defense`` of ``robustkit eval``: the input defenses wrapped around the loaded model.

* ``random-resize-pad[:MIN,MAX]``: :class:`robustkit.defenses.RandomResizePad` onto a canvas of the data's image
  size, the scale uniform in ``[MIN, MAX]`` (default 0.9,1; MAX <= 1 so the image fits), seeded from ``--seed``;
* ``hgd:FILE[:W1,W2,...]``: :class:`robustkit.defenses.GuidedDenoiser` with a
  :class:`robustkit.defenses.DUNet` whose state dict is ``FILE`` (``robustkit train-denoiser`` writes
  ``OUT/dunet.pt``); the widths are read from the state dict unless given.

Several ``--defense`` stack: the input passes through them in the order given, then the model. Each defense's
description goes into the run's settings, so a resume with another defense is refused.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from robustkit.cli.specs import SpecError, load_weights

if TYPE_CHECKING:   # pragma: no cover
    from torch import nn

HELP = ("an input defense around the model: random-resize-pad[:MIN,MAX] (random resize by a scale in [MIN, MAX], "
        "default 0.9,1, and zero-pad to the image size; seeded by --seed) or hgd:DUNET.pt[:W1,W2,...] (the guided "
        "denoiser written by robustkit train-denoiser; widths read from the file unless given); repeat to stack, "
        "the input passing through them in the order given")
#: The DUNet widths of ``robustkit train-denoiser`` when ``--widths`` is not given (small images train well).
DEFAULT_WIDTHS = (16, 32, 64, 64)


def parse_widths(text: str, argument: str) -> Tuple[int, ...]:
    """``"16,32,64"`` -> (16, 32, 64): at least two positive integers."""
    if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)+", text or "") or min(int(w) for w in text.split(",")) < 1:
        raise SpecError(f"{argument}: widths must be at least two positive integers such as 16,32,64, got {text!r}")
    return tuple(int(w) for w in text.split(","))


def _scale(text: str, spec: str) -> float:
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise SpecError(f"--defense: {spec!r}: scales must be numbers such as 0.8,1, got {text!r}") from None


def parse(spec: str) -> Dict:
    """One ``--defense`` value -> its parsed form (checked before anything is loaded)."""
    name, _, rest = spec.partition(":")
    if name == "random-resize-pad":
        if not rest:
            return {"name": name, "min_scale": 0.9, "max_scale": 1.0}
        parts = rest.split(",")
        if len(parts) != 2:
            raise SpecError(f"--defense: {spec!r}: expected random-resize-pad:MIN,MAX such as random-resize-pad:0.8,1")
        return {"name": name, "min_scale": _scale(parts[0], spec), "max_scale": _scale(parts[1], spec)}
    if name == "hgd":
        if not rest:
            raise SpecError(f"--defense: {spec!r}: hgd needs the denoiser's weights, hgd:DUNET.pt[:W1,W2,...]")
        path, widths = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and head and re.fullmatch(r"[\d,\s]+", tail):    # a trailing width list, not part of the path
            path, widths = head, parse_widths(tail, f"--defense {spec}")
        return {"name": name, "weights": path, "widths": widths}
    raise SpecError(f"--defense: unknown defense {spec!r}; use random-resize-pad[:MIN,MAX] or hgd:DUNET.pt[:widths]")


def _widths_in(path: str) -> Optional[Tuple[int, ...]]:
    """The DUNet widths a state dict was saved with (the output channels of each encoder block's first conv);
    None when the file is not such a state dict (load_weights then names what is wrong)."""
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:   # unreadable: load_weights reports it with the option's name
        return None
    if not isinstance(state, dict):
        return None
    widths = []
    while isinstance(state.get(f"encoder.{len(widths)}.0.weight"), torch.Tensor):
        widths.append(int(state[f"encoder.{len(widths)}.0.weight"].shape[0]))
    return tuple(widths) if len(widths) >= 2 else None


def _wrap(model: "nn.Module", spec: str, parsed: Dict, image_shape: Sequence[int], seed: int):
    import robustkit as rk
    from robustkit.eval.describe import model_fingerprint
    channels, height, width = image_shape[-3:]
    if parsed["name"] == "random-resize-pad":
        try:
            defended = rk.defenses.RandomResizePad(model, out_size=(height, width), min_scale=parsed["min_scale"],
                                                   max_scale=parsed["max_scale"], seed=seed)
            defended.draw(1, height, width)     # refuses a scale that would not fit, before the run starts
        except ValueError as error:
            raise SpecError(f"--defense {spec}: {error}") from None
        return defended, {**parsed, "pad_value": defended.pad_value, "seed": seed}
    widths = parsed["widths"] or _widths_in(parsed["weights"]) or DEFAULT_WIDTHS
    denoiser = load_weights(rk.defenses.DUNet(channels, widths), parsed["weights"], argument="--defense").eval()
    # the weights' hash, not their path: moving the file does not make it another run
    return (rk.defenses.GuidedDenoiser(denoiser, model).eval(),
            {"name": "hgd", "widths": list(widths), "denoiser": model_fingerprint(denoiser)})


def apply(model: "nn.Module", specs: Sequence[str], *, image_shape: Sequence[int], seed: int):
    """``(defended model, [description, ...])``: the first spec sees the input first (it is the outermost
    wrapper). Each random defense gets its own seed, ``seed + position``."""
    parsed = [parse(s) for s in specs]            # every spec is checked before any file is read
    descriptions: List[Dict] = [{}] * len(specs)
    for position in reversed(range(len(specs))):
        model, descriptions[position] = _wrap(model, specs[position], parsed[position], image_shape,
                                              seed + position)
    return model, descriptions
