"""Training the high-level representation guided denoiser (HGD; Liao et al. 2018, Sec. 3.2).

The denoiser ``D`` is trained on adversarial examples ``x*`` of a frozen target model ``f``; the denoised image
is ``x^ = x* - D(x*)``, and the loss is the L1 distance between the target model's representations of ``x^``
and of the clean ``x`` at a guide layer ``l``::

    L = || f_l(x^) - f_l(x) ||_1           (summed over the layer's units, averaged over the batch)

``guide="logits"`` is Liao et al.'s LGD (the layer is the logits), ``guide="features:<module name>"`` their FGD
at any named module of the target model, and ``guide="pixel"`` the plain pixel-level denoiser (``||x^ - x||_1``)
they compare against.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from robustkit.training.objective import ObjectiveOutput, check_images, generation_mode

GUIDE_KINDS = ("logits", "pixel", "features:<module name>")


class _Guide:
    """The guide representation ``f_l`` of the target model: its logits, a named module's output (read by a
    forward hook), or the pixels themselves."""

    def __init__(self, model: nn.Module, guide: str):
        self.model, self.guide = model, guide
        self.layer: Optional[nn.Module] = None
        if guide.startswith("features:"):
            name = guide[len("features:"):]
            modules = dict(model.named_modules())
            modules.pop("", None)
            if name not in modules:
                raise ValueError(f"train_denoiser: guide layer {name!r} is not a module of the model; valid names: "
                                 f"{', '.join(modules) or '(none)'}")
            self.layer = modules[name]
        elif guide not in ("logits", "pixel"):
            raise ValueError(f"train_denoiser: guide must be one of {GUIDE_KINDS}, got {guide!r}")

    def __call__(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``(f_l(x), logits)``; for the pixel guide ``f_l(x) = x``."""
        if self.layer is None:
            logits = self.model(x)
            return (x if self.guide == "pixel" else logits), logits
        captured: List[Tensor] = []
        handle = self.layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        return captured[-1], logits


def hgd_distance(denoised: Tensor, clean: Tensor) -> Tensor:
    """``mean_i || a_i - b_i ||_1``: the per-sample L1 distance of two representations, averaged."""
    return (denoised - clean).abs().flatten(1).sum(1).mean()


class HGDObjective:
    """The HGD loss as a training objective for the *denoiser*: ``objective(denoiser, x, y)``.

    Each call generates the adversarial images with the next attack of ``attacks`` (round robin over
    batches, as a training set mixing several attacks and budgets), against the frozen target model in eval
    mode. ``out.logits`` are the target model's logits on the denoised adversarial images, so ``fit``'s
    running accuracy is the defended pipeline's accuracy on the training attacks.
    """

    def __init__(self, model: nn.Module, attacks: Sequence[Callable[[Tensor, Tensor], Tensor]],
                 guide: str = "logits"):
        attacks = list(attacks)
        if not attacks:
            raise ValueError("train_denoiser: attacks must name at least one attack (adversarial examples are "
                             "what the denoiser learns to clean)")
        self.model = model
        self.attacks = attacks
        self.guide = _Guide(model, guide)
        self._next = 0

    def __call__(self, denoiser: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        check_images("train_denoiser", x)
        attack = self.attacks[self._next % len(self.attacks)]
        self._next += 1
        with generation_mode(self.model):
            x_adv = attack(x, y).detach()
            with torch.no_grad():
                target, _ = self.guide(x)
        noise = denoiser(x_adv)
        if noise.shape != x_adv.shape:
            raise ValueError(f"train_denoiser: the denoiser's output shape {list(noise.shape)} differs from its "
                             f"input's {list(x_adv.shape)}")
        denoised = x_adv - noise
        with generation_mode(self.model):
            rep, logits = self.guide(denoised)
        loss = hgd_distance(rep, target)
        return ObjectiveOutput(loss=loss, logits=logits.detach(),
                               metrics={"guide_distance": loss.detach(),
                                        "pixel_l1": (denoised - x).detach().abs().flatten(1).sum(1).mean()})


@contextlib.contextmanager
def frozen(model: nn.Module):
    """The target model's parameters stop requiring grad while the denoiser trains (so no backward writes
    their ``.grad`` and no optimizer can move them); the flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def train_denoiser(denoiser: nn.Module, model: nn.Module, train_data, attacks: Sequence, *,
                   guide: str = "logits", epochs: int = 1, **fit_kwargs) -> Dict:
    """Train ``denoiser`` with HGD's loss in front of the frozen ``model``, on ``robustkit.training.fit``
    (progress, per-epoch checkpoints and resume, torchrun). ``fit_kwargs`` go to ``fit`` (``batch_size``,
    ``optimizer``, ``lr``, ``checkpoint_dir``, ``resume``, ...). Returns ``fit``'s history.
    """
    from robustkit.training import fit   # the loop lives one layer down; imported here to keep import light

    objective = HGDObjective(model, attacks, guide=guide)
    with frozen(model):
        return fit(denoiser, train_data, objective, epochs=epochs, **fit_kwargs)
