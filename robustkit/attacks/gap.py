"""Generative adversarial perturbations (GAP; Poursaeed, Katsman, Gao and Belongie, CVPR 2018), the black-box
attacker of the retraining seed (Thakur et al., Sec. 3.2.1, Fig. 2).

A ResNet generator ``f_theta`` is trained against a fixed classifier:

* ``mode="universal"``: its input is one fixed pattern ``z ~ U[0, 1]``; its output is scaled to the L-inf
  budget, ``delta = eps * f(z) / ||f(z)||_inf``, and the same ``delta`` is added to every image
  (``x_adv = clip(x + delta, 0, 1)``).
* ``mode="image"``: its input is the image itself and each image gets its own ``delta = eps * f(x) /
  ||f(x)||_inf`` (image-dependent perturbations).

Losses (``loss=``; the logarithm keeps the gradient large where the cross-entropy is small):

* ``"least_likely"`` (default for the non-targeted attack; what the authors' released code ``GAP_clf.py``
  trains): minimise ``log CE(model(x_adv), least_likely(model(x)))``, pulling every image toward the class
  the model finds least likely for it.
* ``"prediction"``: minimise ``-log CE(model(x_adv), argmax model(x))``, pushing every image away from the
  model's clean prediction (the plain non-targeted objective; for one universal perturbation it does not ask
  different images to move toward different, conflicting classes).
* targeted (``target=c``): minimise ``log CE(model(x_adv), c)``.

The classifier is never modified.

Example::

    gap = GAP(model, eps=10 / 255).fit(train_loader, epochs=2)
    x_adv = gap(x)                        # labels are optional; gap.run(x, y) gives an AttackResult
    gap.save("gap.pt"); GAP(model).load("gap.pt")
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Optional, Union

import torch
from torch import Tensor, nn

from robustkit.attacks._gap_generator import ResnetGenerator
from robustkit.attacks.base import AttackOutput, AttackResult, FixedBudgetAttack
from robustkit.attacks.targets import TargetSpec
from robustkit.nn import module_device

MODES = ("universal", "image")
LOSSES = ("least_likely", "prediction")


class GAP(FixedBudgetAttack):
    """Generative adversarial perturbations (Poursaeed et al. 2018).

    Args:
        model: the classifier (images in [0, 1] -> logits); only its input gradient is used.
        eps: L-inf budget in [0, 1] pixel units (the seed's "L-inf = 10" on 0-255 images is ``10 / 255``).
        mode: ``"universal"`` (one perturbation for all images) or ``"image"`` (one per image).
        target: None for the non-targeted attack, or a class index for a targeted generator.
        width, blocks: generator size (see :class:`ResnetGenerator`).
        loss: the non-targeted objective, ``"least_likely"`` or ``"prediction"`` (see the module docstring);
            ignored when ``target`` is set.
        seed: seeds the generator's initial weights and the fixed input pattern (None: the global torch
            generator draws them).
        **options: the other shared :class:`robustkit.attacks.AttackOptions` (``amp``, ``batch_size``, ...).

    Calling it: ``gap(x)`` or ``gap(x, y)`` (the perturbation never depends on the labels; given, they are
    validated) and ``gap.run(x, y)``. The images do not depend on a call's ``target`` either, so ``target``
    must be None or the class the generator was trained for; ``run`` then reports targeted success for it.
    """

    norms = ("linf",)

    def __init__(self, model: nn.Module, *, eps: float = 10 / 255, mode: str = "universal",
                 target: Optional[int] = None, loss: str = "least_likely", width: int = 32, blocks: int = 6,
                 seed: Optional[int] = None, **options):
        if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 < eps <= 1):
            raise ValueError(f"GAP: eps must be in (0, 1] (pixel units), got {eps!r}")
        super().__init__(model, eps=eps, norm="linf", seed=seed, **options)
        if mode not in MODES:
            raise ValueError(f"GAP: mode must be one of {MODES}, got {mode!r}")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 0):
            raise ValueError(f"GAP: target must be None or a class index >= 0, got {target!r}")
        if loss not in LOSSES:
            raise ValueError(f"GAP: loss must be one of {LOSSES}, got {loss!r}")
        self.mode, self.target, self.loss = mode, target, loss
        self.width, self.blocks = width, blocks
        self.generator: Optional[ResnetGenerator] = None
        self.noise: Optional[Tensor] = None  # [1, C, H, W] fixed input pattern (universal mode)
        self.perturbation: Optional[Tensor] = None  # [1, C, H, W] the universal delta after fit

    # ---- training ---------------------------------------------------------------------------------------
    def fit(self, loader: Iterable, epochs: int = 1, lr: float = 2e-4, *, progress: bool = True,
            on_epoch_end: Optional[Callable[[int, "GAP"], None]] = None) -> "GAP":
        """Trains the generator on ``loader`` (batches of images, or ``(images, labels)``; labels are not
        used) with Adam(lr, betas=(0.5, 0.999)) as in GAP; returns ``self``.

        ``on_epoch_end(epoch, self)`` is called after each epoch with the attack usable as trained so far
        (e.g. to measure the fooling ratio on held-out data as training goes)."""
        if epochs < 1 or lr <= 0:
            raise ValueError(f"GAP.fit: epochs must be >= 1 and lr > 0, got {epochs}, {lr}")
        from tqdm.auto import tqdm

        optimizer = None
        for epoch in range(epochs):
            total = len(loader) if hasattr(loader, "__len__") else None
            bar = tqdm(loader, total=total, desc=f"GAP epoch {epoch + 1}/{epochs}", disable=not progress,
                       leave=False)
            for batch in bar:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                self._check_images(x)
                if self.generator is None:
                    self._build(x)
                if optimizer is None:
                    optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
                with self._contexts():  # the classifier in eval mode (attack_mode), autograd on
                    loss, fooled = self._step(x)
                optimizer.zero_grad(set_to_none=True)
                params = [p for p in self.generator.parameters()]
                # grads of the generator only: the classifier's .grad fields are never touched
                grads = torch.autograd.grad(loss, params)
                for p, g in zip(params, grads):
                    p.grad = g
                optimizer.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", fooled=f"{fooled:.2f}")
            if self.generator is None:
                raise ValueError("GAP.fit: loader yielded no batches")
            self._finish()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, self)
        return self

    def _finish(self) -> None:
        """Freezes the universal perturbation and puts the generator in eval mode. The universal delta is made
        in train mode, as during training: batch norm then normalises by the noise pattern's own statistics,
        which is what the optimised perturbation was; eval mode would use running averages instead."""
        if self.mode == "universal":
            with torch.no_grad():
                self.perturbation = self._scaled(self._generate_universal(train=True))
        self.generator.eval()

    def _step(self, x: Tensor) -> tuple[Tensor, float]:
        self.generator.train()
        with torch.no_grad():
            clean_logits = self.predict(x)
        if self.target is None:
            goal = clean_logits.argmin(dim=1) if self.loss == "least_likely" else clean_logits.argmax(dim=1)
        else:
            goal = torch.full((x.shape[0],), self.target, dtype=torch.int64, device=x.device)
        delta = self._scaled(self._generate_universal(train=True) if self.mode == "universal"
                             else self.generator(x * 2 - 1))
        logits = self.logits(self._apply(x, delta))
        loss = torch.log(nn.functional.cross_entropy(logits, goal) + 1e-12)
        if self.target is None and self.loss == "prediction":
            loss = -loss  # away from the clean prediction
        pred = logits.argmax(dim=1)
        fooled = (pred == goal) if self.target is not None else (pred != clean_logits.argmax(dim=1))
        return loss, fooled.float().mean().item()

    # ---- attacking --------------------------------------------------------------------------------------
    def perturb(self, x: Tensor) -> Tensor:
        """``x_adv = clip(x + delta, 0, 1)`` with ``||x_adv - x||_inf <= eps``."""
        self._check_fitted()
        self._check_images(x)
        with torch.no_grad():
            if self.mode == "universal":
                delta = self.perturbation.to(x.device, x.dtype)
            else:
                delta = self._scaled(self.generator(x * 2 - 1))
            return self._apply(x, delta)

    def __call__(self, x: Tensor, y: Optional[Tensor] = None, target: TargetSpec = None, *,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        """Adversarial images for ``x``; ``y`` is optional (GAP never looks at labels) and validated when given;
        ``target`` must be None or the generator's own target class."""
        self._check_fitted()
        if y is None:
            self._check_target(target, None)
            with self._contexts():
                return self.perturb(x)
        return super().__call__(x, y, self._check_target(target, y), generator=generator)

    def run(self, x: Tensor, y: Tensor, target: TargetSpec = None, *,
            generator: Optional[torch.Generator] = None) -> AttackResult:
        """As :meth:`Attack.run`; a generator trained with ``target=c`` reports targeted success for ``c``."""
        self._check_fitted()
        return super().run(x, y, self._check_target(target, y), generator=generator)

    def _check_target(self, target: TargetSpec, y: Optional[Tensor]) -> Optional[Tensor]:
        """The call's target as the generator's own (a ``[B]`` tensor of it, or None); anything else is an error:
        the perturbation does not depend on it."""
        if target is None:
            return None if self.target is None or y is None else torch.full_like(y, self.target)
        same = self.target is not None and isinstance(target, Tensor) and target.numel() > 0 \
            and not target.is_floating_point() and bool((target == self.target).all())
        if not same:
            trained = "untargeted" if self.target is None else f"trained for class {self.target}"
            raise ValueError(f"GAP: target must be None{'' if self.target is None else f' or {self.target}'}: the "
                             f"generator is {trained} and its perturbation does not depend on the call's target")
        return target

    def _attack(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                generator: Optional[torch.Generator]) -> AttackOutput:
        return AttackOutput(adv=self.perturb(x), steps=torch.ones_like(y))

    # ---- persistence ------------------------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the generator weights, the fixed noise pattern, the universal perturbation and the config."""
        self._check_fitted()
        torch.save({"config": {"eps": self.eps, "mode": self.mode, "target": self.target, "loss": self.loss,
                               "width": self.width,
                               "blocks": self.blocks, "image_shape": list(self.noise.shape[1:])},
                    "generator": self.generator.state_dict(), "noise": self.noise.cpu(),
                    "perturbation": None if self.perturbation is None else self.perturbation.cpu()}, path)

    def load(self, path: Union[str, os.PathLike]) -> "GAP":
        """Restores a generator written by :meth:`save` (its config replaces this instance's); returns self."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = state["config"]
        self.eps, self.mode, self.target = cfg["eps"], cfg["mode"], cfg["target"]
        self.loss = cfg.get("loss", "least_likely")  # files written before the option existed
        self.width, self.blocks = cfg["width"], cfg["blocks"]
        self._build(torch.zeros(1, *cfg["image_shape"], device=module_device(self.model)))
        self.generator.load_state_dict(state["generator"])
        self.generator.eval()
        device = module_device(self.model)
        self.noise = state["noise"].to(device)
        self.perturbation = None if state["perturbation"] is None else state["perturbation"].to(device)
        return self

    # ---- internals --------------------------------------------------------------------------------------
    def _build(self, x: Tensor) -> None:
        channels = x.shape[1]
        if self.seed is None:
            self.noise = torch.rand(1, *x.shape[1:]).to(x.device)
            self.generator = ResnetGenerator(channels, channels, self.width, self.blocks).to(x.device)
            return
        generator = torch.Generator().manual_seed(self.seed)
        self.noise = torch.rand(1, *x.shape[1:], generator=generator).to(x.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.generator = ResnetGenerator(channels, channels, self.width, self.blocks).to(x.device)

    def _generate_universal(self, train: bool) -> Tensor:
        self.generator.train(train)
        return self.generator(self.noise * 2 - 1)

    def _scaled(self, raw: Tensor) -> Tensor:
        """Scales each sample's raw output so its L-inf norm is exactly ``eps``."""
        peak = raw.detach().flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *([1] * (raw.dim() - 1)))
        return (raw * (self.eps / peak)).clamp(-self.eps, self.eps)

    def _apply(self, x: Tensor, delta: Tensor) -> Tensor:
        return (x + delta).clamp(0, 1)


    def _check_images(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
            got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"GAP: images (x) must be a float [B, C, H, W] tensor in [0, 1], got {got}")
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError("GAP: images (x) must be finite, got NaN or inf")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("GAP: images (x) must hold pixel values in [0, 1]")
        if self.noise is not None and tuple(x.shape[1:]) != tuple(self.noise.shape[1:]):
            raise ValueError(f"GAP: the generator was built for images of shape {list(self.noise.shape[1:])}, "
                             f"got {list(x.shape[1:])}")

    def _check_fitted(self) -> None:
        if self.generator is None:
            raise RuntimeError("GAP: call fit(loader) or load(path) first")

