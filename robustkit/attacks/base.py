"""The contract every attack follows: ``atk(x, y, target=None) -> Tensor`` for training code and
``atk.run(x, y, target=None) -> AttackResult`` for evaluation.

Subclasses implement ``_run_batch(x, y, target)`` on one chunk of already-validated inputs; this base
class validates inputs, resolves the target specification, splits very large inputs into chunks of
``batch_size``, and runs the model(s) (under autocast when ``amp=True``).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from robustkit.attacks._conv_routing import routed_convolutions
from robustkit.attacks.targets import TargetSpec, resolve_target


@dataclass
class AttackResult:
    """What an attack produced for a batch of B inputs.

    Attributes:
        adv: ``[B, ...]`` adversarial inputs in the same [0, 1] pixel space as ``x``.
        success: ``[B]`` bool: untargeted, the prediction differs from ``y``; targeted, it equals ``target``.
        logits: ``[B, num_classes]`` logits of ``adv`` (for an ensemble, the mean of its members' logits).
        linf, l2: ``[B]`` norms of ``adv - x`` over all non-batch dimensions.
        steps: ``[B]`` int64, the iterations each sample used (smaller than the budget under early stop).
        target: ``[B]`` int64 target classes, or None for an untargeted attack.
        extras: attack-specific per-sample tensors, e.g. ``"rho2"`` (``||r||_2 / ||x||_2``) for DeepFool.
    """

    adv: Tensor
    success: Tensor
    logits: Tensor
    linf: Tensor
    l2: Tensor
    steps: Tensor
    target: Optional[Tensor] = None
    extras: Dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.adv.shape[0]

    @staticmethod
    def cat(parts: Sequence["AttackResult"]) -> "AttackResult":
        """Concatenates chunk results along the batch."""
        if len(parts) == 1:
            return parts[0]
        kwargs = {}
        for f in fields(AttackResult):
            values = [getattr(p, f.name) for p in parts]
            if f.name == "extras":
                kwargs[f.name] = {k: torch.cat([v[k] for v in values]) for k in values[0]}
            elif values[0] is None:
                kwargs[f.name] = None
            else:
                kwargs[f.name] = torch.cat(values)
        return AttackResult(**kwargs)


def perturbation_norms(adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample L-inf and L2 norms of ``adv - x``, ``[B]`` each."""
    delta = (adv - x).flatten(1)
    return delta.abs().amax(dim=1) if delta.shape[1] else delta.new_zeros(delta.shape[0]), delta.norm(dim=1)


def is_success(logits: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y


class Attack:
    """Base class of all attacks.

    Args:
        model: an ``nn.Module`` mapping ``[B, C, H, W]`` images in [0, 1] to logits (put
            :class:`robustkit.Normalize` in front of models that expect normalised input).
        models: a list of K models in place of ``model``, for ensemble attacks.
        amp: run the model(s) under autocast (bfloat16 on CUDA and CPU); the perturbation stays float32.
        batch_size: split inputs larger than this into chunks (None: one chunk).
        seed: seeds the attack's own randomness (random start, random targets) for reproducible runs.
        streams: for an ensemble on one CUDA device, run the K member forwards on K side CUDA streams so
            that their kernels can overlap (the backward of each member then runs on its member's stream,
            as autograd does for any op). ``"auto"`` (default) and ``True``: on for K >= 2 models on CUDA,
            except while a CUDA graph is being captured or under ``torch.compile``; ``False``: never. A no-op
            on CPU and for one model. Whether the overlap pays depends on how well one forward fills the
            GPU: ``bench/attacks.py --gpu`` measures streams on vs off.
        conv_input_grad: ``"robustkit"`` (default): on CPU, the backward of a model's first-layer convolutions
            (at most 3 input channels, stride 1, one group) computes the input gradient with
            :func:`robustkit.ops.conv2d_input_grad`, 1.2-5x faster there than PyTorch's oneDNN kernel
            (:mod:`robustkit.attacks._conv_routing`); the forward and any parameter gradients stay PyTorch's,
            and the result equals PyTorch's up to float rounding. ``"torch"``: PyTorch's backward everywhere.
            No effect on CUDA.
    """

    #: subclasses that can only run untargeted (or only targeted) say so here
    supports_targeted = True
    supports_untargeted = True

    def __init__(
        self,
        model: Optional[nn.Module] = None,
        *,
        models: Optional[Sequence[nn.Module]] = None,
        amp: bool = False,
        batch_size: Optional[int] = None,
        seed: Optional[int] = None,
        streams="auto",
        conv_input_grad: str = "robustkit",
    ):
        if (model is None) == (models is None):
            raise ValueError(f"{type(self).__name__}: pass exactly one of model=... or models=[...]")
        members: List[nn.Module] = [model] if model is not None else list(models)  # type: ignore[arg-type]
        if len(members) == 0:
            raise ValueError(f"{type(self).__name__}: models must not be empty")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{type(self).__name__}: models[{i}] must be an nn.Module, got {type(m).__name__}")
        devices = {_module_device(m) for m in members} - {None}
        if len(devices) > 1:
            raise ValueError(f"{type(self).__name__}: all models must be on one device, got {sorted(map(str, devices))}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be >= 1 or None, got {batch_size}")
        if not (streams == "auto" or streams is True or streams is False):
            raise ValueError(f"{type(self).__name__}: streams must be 'auto', True or False, got {streams!r}")
        if conv_input_grad not in ("robustkit", "torch"):
            raise ValueError(f"{type(self).__name__}: conv_input_grad must be 'robustkit' or 'torch', "
                             f"got {conv_input_grad!r}")
        self.conv_input_grad = conv_input_grad
        self.models: List[nn.Module] = members
        self.streams = streams
        self._side_streams: Dict[torch.device, List["torch.cuda.Stream"]] = {}
        self.amp = bool(amp)
        self.batch_size = batch_size
        self.seed = seed

    @property
    def model(self) -> nn.Module:
        return self.models[0]

    # ---- public API -------------------------------------------------------------------------------------
    def __call__(self, x: Tensor, y: Tensor, target: TargetSpec = None) -> Tensor:
        return self.run(x, y, target=target).adv

    def run(self, x: Tensor, y: Tensor, target: TargetSpec = None) -> AttackResult:
        """Attacks ``x`` (``[B, C, H, W]`` in [0, 1]) with true labels ``y`` (int64 ``[B]``).

        ``target``: None (untargeted), an int64 ``[B]`` tensor, ``"least_likely"``, ``"random"`` (seeded
        by ``seed``), or a callable ``(logits, y) -> [B]`` target tensor.
        """
        self._check_inputs(x, y)
        self._warn_training_mode()
        generator = _make_generator(self.seed, x.device)
        needs_logits = isinstance(target, str) or callable(target)
        clean_logits = self.predict(x) if needs_logits and x.shape[0] else None
        target_t = resolve_target(target, x, y, clean_logits, generator=generator, name=type(self).__name__)
        if target_t is not None and not self.supports_targeted:
            raise ValueError(f"{type(self).__name__} is untargeted only; pass target=None")
        if target_t is None and not self.supports_untargeted:
            raise ValueError(f"{type(self).__name__} needs a target")
        self._generator = generator
        chunk = self.batch_size or max(1, x.shape[0])
        parts = []
        for start in range(0, max(1, x.shape[0]), chunk):
            sl = slice(start, start + chunk)
            parts.append(self._run_batch(x[sl].detach(), y[sl], None if target_t is None else target_t[sl]))
        return AttackResult.cat(parts)

    # ---- for subclasses ---------------------------------------------------------------------------------
    def _run_batch(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> AttackResult:
        raise NotImplementedError(f"{type(self).__name__} must implement _run_batch")

    def autocast(self):
        """The context the model(s) run in: autocast to bfloat16 when ``amp=True``."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=_device_type(self.models[0]), dtype=torch.bfloat16)

    def member_logits(self, x: Tensor) -> List[Tensor]:
        """Each model's logits of ``x`` as ``[B, num_classes]`` tensors (graph kept for autograd): float32, or
        float64 for float64 models (so exact float64 runs stay exact); half-precision outputs are widened."""
        with self.autocast(), routed_convolutions(self.conv_input_grad == "robustkit" and x.device.type == "cpu"):
            outs = self._forward_on_streams(x) if self._use_streams(x) else [m(x) for m in self.models]
        for i, out in enumerate(outs):
            if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
                shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"{type(self).__name__}: models[{i}] must return [B, num_classes] logits, got {shape}")
        return [o if o.dtype == torch.float64 else o.float() for o in outs]

    def _use_streams(self, x: Tensor) -> bool:
        if self.streams is False or len(self.models) < 2 or x.device.type != "cuda":
            return False
        # Graph capture and torch.compile trace one stream's ops; forking streams there is not worth the risk.
        return not (torch.cuda.is_current_stream_capturing() or torch.compiler.is_compiling())

    def _forward_on_streams(self, x: Tensor) -> List[Tensor]:
        """The K member forwards, model k on side stream k, joined back into the current stream.

        Ordering: each side stream first waits for the current stream (x and the parameters are ready),
        and the current stream waits for every side stream before anyone reads the logits. Memory: the
        caching allocator ties a block to the stream it was allocated on, so x (allocated on the current
        stream, read on side streams) and each output (allocated on a side stream, read on the current one)
        are marked with ``record_stream``; the activations saved for backward are allocated and later read
        on their member's stream, where autograd runs each backward op (it syncs streams at the joins)."""
        device = x.device
        current = torch.cuda.current_stream(device)
        streams = self._side_streams.get(device)
        if streams is None or len(streams) != len(self.models):
            streams = [torch.cuda.Stream(device=device) for _ in self.models]
            self._side_streams[device] = streams
        outs = []
        for model, stream in zip(self.models, streams):
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                x.record_stream(stream)
                outs.append(model(x))
        for stream, out in zip(streams, outs):
            current.wait_stream(stream)
            if isinstance(out, Tensor):
                out.record_stream(current)
        return outs

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Mean logits of the model(s), float32 ``[B, num_classes]``."""
        outs = self.member_logits(x)
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(dim=0)

    def make_result(self, x: Tensor, adv: Tensor, y: Tensor, target: Optional[Tensor], steps: Tensor,
                    logits: Optional[Tensor] = None, extras: Optional[Dict[str, Tensor]] = None) -> AttackResult:
        """Builds the result for a chunk; evaluates the model(s) on ``adv`` unless ``logits`` is given."""
        adv = adv.detach()
        logits = self.predict(adv) if logits is None else logits.detach().float()
        linf, l2 = perturbation_norms(adv, x)
        return AttackResult(adv=adv, success=is_success(logits, y, target), logits=logits, linf=linf, l2=l2,
                            steps=steps, target=target, extras=extras or {})

    # ---- checks -----------------------------------------------------------------------------------------
    def _check_inputs(self, x: Tensor, y: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name}: x must be a floating-point tensor of images in [0, 1]")
        if x.dim() < 2:
            raise ValueError(f"{name}: x must be [B, ...] (images [B, C, H, W]), got shape {list(x.shape)}")
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
            got = f"{y.dtype} {list(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"{name}: y must be an int64 [B] tensor with B = {x.shape[0]}, got {got}")
        if y.device != x.device:
            raise ValueError(f"{name}: x and y must be on the same device, got {x.device} and {y.device}")
        model_device = _module_device(self.models[0])
        if model_device is not None and model_device != x.device:
            raise ValueError(f"{name}: x is on {x.device} but the model is on {model_device}")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{name}: x must hold pixel values in [0, 1] (put robustkit.Normalize inside the "
                             f"model instead of normalising the input), got range [{x.min().item():.4g}, "
                             f"{x.max().item():.4g}]")

    def _warn_training_mode(self) -> None:
        for i, m in enumerate(self.models):
            if m.training:
                warnings.warn(f"{type(self).__name__}: models[{i}] is in training mode (dropout and batch-norm "
                              "statistics change the attack); call model.eval() first", stacklevel=3)


def _module_device(m: nn.Module) -> Optional[torch.device]:
    for t in m.parameters():
        return t.device
    for t in m.buffers():
        return t.device
    return None


def _device_type(m: nn.Module) -> str:
    d = _module_device(m)
    return d.type if d is not None else "cpu"


def _make_generator(seed: Optional[int], device: torch.device) -> Optional[torch.Generator]:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


__all__ = ["Attack", "AttackResult", "perturbation_norms", "is_success", "TargetSpec"]
