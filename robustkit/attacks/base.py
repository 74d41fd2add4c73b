"""The contract every attack follows.

* ``atk(x, y, target=None, *, generator=None) -> Tensor``: the adversarial images, for training loops.
* ``atk.run(x, y, target=None, *, generator=None) -> AttackResult``: images, success, logits, norms and
  steps, for evaluation.

Both validate the inputs, resolve the target specification, split very large inputs into chunks of
``batch_size``, put the model(s) in eval mode for the duration of the attack (``attack_mode``), enable
autograd (attacks need the input gradient even when called under ``torch.no_grad()`` or
``torch.inference_mode()``), and call the
subclass's ``_attack(x, y, target, generator)`` on each chunk. ``_attack`` returns an :class:`AttackOutput`
(images, steps, extras); only ``run`` evaluates the model(s) on the images to build the
:class:`AttackResult`.

Two kinds of attack, as types: a :class:`FixedBudgetAttack` searches inside a norm ball of radius ``eps``
(success rate and robust accuracy are its measures), a :class:`MinimalNormAttack` looks for the smallest
perturbation in its norm that succeeds (the perturbation norms are its measures).

The options every attack shares are declared once, in :class:`AttackOptions`, and passed as keywords.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from robustkit.attacks._conv_routing import routed_convolutions, routing_applies
from robustkit.attacks.targets import TargetSpec, resolve_target
from robustkit.nn import Ensemble, module_device


@dataclass
class AttackResult:
    """What an attack produced for a batch of B inputs.

    Attributes:
        adv: ``[B, ...]`` adversarial inputs in the same [0, 1] pixel space as ``x``.
        success: ``[B]`` bool: untargeted, the prediction differs from ``y``; targeted, it equals ``target``.
        logits: ``[B, num_classes]`` logits of ``adv`` (for an ensemble, the ensemble's weighted mean logits).
        linf, l2: ``[B]`` norms of ``adv - x`` over all non-batch dimensions.
        steps: ``[B]`` int64, the iterations each sample used (smaller than the budget under early stop).
        target: ``[B]`` int64 target classes, or None for an untargeted attack.
        extras: attack-specific per-sample tensors, e.g. ``"rho2"`` (``||r||_2 / ||x||_2``) for DeepFool. Their
            names never repeat a field's name with another meaning.
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


@dataclass
class AttackOutput:
    """What a subclass's ``_attack`` returns for one chunk.

    Attributes:
        adv: ``[B, ...]`` the adversarial images.
        steps: ``[B]`` int64 iterations each sample used.
        extras: per-sample tensors copied into :attr:`AttackResult.extras`.
        logits: ``[B, C]`` the ensemble logits of ``adv`` when the attack already computed them (early stop
            does); ``run`` then skips the forward that would recompute them.
    """

    adv: Tensor
    steps: Tensor
    extras: Dict[str, Tensor] = field(default_factory=dict)
    logits: Optional[Tensor] = None


def perturbation_norms(adv: Tensor, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-sample L-inf and L2 norms of ``adv - x``, ``[B]`` each."""
    delta = (adv - x).flatten(1)
    return delta.abs().amax(dim=1) if delta.shape[1] else delta.new_zeros(delta.shape[0]), delta.norm(dim=1)


def is_success(logits: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y


_ATTACK_MODES = ("eval", "train")
_CONV_INPUT_GRAD = ("robustkit", "torch")


@dataclass(frozen=True)
class AttackOptions:
    """The options every attack takes, as keywords (``PGD(model, eps=0.3, batch_size=256, seed=0)``).

    Attributes:
        amp: run the model(s) under autocast (bfloat16 on CUDA and CPU); the perturbation stays float32.
        batch_size: split inputs larger than this into chunks (None: one chunk).
        seed: seeds the attack's own random generator once, at construction. Each call draws from it and
            advances it (random starts, ``target="random"``), so successive batches of a training loop get
            different random starts, and two attacks built with one seed produce the same sequence. A
            ``generator=`` passed to the call is used instead (the evaluation runner passes one per batch).
            None: the global torch generator.
        streams: for an ensemble on one CUDA device, run the K member forwards on K side CUDA streams so that
            their kernels can overlap (the backward of each member then runs on its member's stream, as
            autograd does for any op). ``"auto"`` (default) and ``True``: on for K >= 2 models on CUDA, except
            while a CUDA graph is being captured or under ``torch.compile``; ``False``: never. A no-op on CPU
            and for one model. ``bench/attacks.py --gpu`` measures streams on vs off.
        conv_input_grad: ``"robustkit"`` (default): on CPU, the backward of a model's first-layer
            convolutions (at most 3 input channels, stride 1, one group) computes the input gradient with
            :func:`robustkit.ops.conv2d_input_grad`, 1.2-5x faster there than PyTorch's oneDNN kernel
            (:mod:`robustkit.attacks._conv_routing`); the forward and any parameter gradients stay
            PyTorch's, the result equals PyTorch's up to float rounding, and double backward works through
            it. It steps aside for ``torch.compile``\\ d models. ``"torch"``: PyTorch's backward everywhere.
            No effect on CUDA.
        attack_mode: ``"eval"`` (default): every module of the model(s) is in eval mode while the attack runs
            (batch-norm statistics are used, not updated; dropout is off), and each module's own mode is
            restored afterwards, so an attack inside a training loop leaves the model as it found it.
            ``"train"``: the modules keep the mode they are in (batch norm in train mode then normalises by
            the attacked batch and updates its running statistics on every forward).
    """

    amp: bool = False
    batch_size: Optional[int] = None
    seed: Optional[int] = None
    streams: Union[str, bool] = "auto"
    conv_input_grad: str = "robustkit"
    attack_mode: str = "eval"

    def check(self, owner: str) -> None:
        if not isinstance(self.amp, bool):
            raise TypeError(f"{owner}: amp must be a bool, got {type(self.amp).__name__}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ValueError(f"{owner}: batch_size must be >= 1 or None, got {self.batch_size!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TypeError(f"{owner}: seed must be an int or None, got {type(self.seed).__name__}")
        if not (self.streams == "auto" or self.streams is True or self.streams is False):
            raise ValueError(f"{owner}: streams must be 'auto', True or False, got {self.streams!r}")
        if self.conv_input_grad not in _CONV_INPUT_GRAD:
            raise ValueError(f"{owner}: conv_input_grad must be 'robustkit' or 'torch', got {self.conv_input_grad!r}")
        if self.attack_mode not in _ATTACK_MODES:
            raise ValueError(f"{owner}: attack_mode must be 'eval' or 'train', got {self.attack_mode!r}")


_OPTION_NAMES = tuple(f.name for f in fields(AttackOptions))


class Attack:
    """Base class of all attacks.

    Args:
        model: an ``nn.Module`` mapping ``[B, C, H, W]`` images in [0, 1] to logits (put
            :class:`robustkit.nn.Normalize` in front of models that expect normalised input), or a
            :class:`robustkit.nn.Ensemble`.
        models: a list of K models (or an :class:`~robustkit.nn.Ensemble`) in place of ``model``, for ensemble
            attacks. Both forms become one :class:`~robustkit.nn.Ensemble`; its (weighted) mean logits decide
            success.
        **options: the shared :class:`AttackOptions` (``amp``, ``batch_size``, ``seed``, ``streams``,
            ``conv_input_grad``, ``attack_mode``).

    Subclasses implement ``_attack(x, y, target, generator) -> AttackOutput`` for one chunk of validated
    inputs (``target`` an int64 ``[B]`` tensor or None; ``generator`` the ``torch.Generator`` to draw from, or
    None for the global one).
    """

    #: subclasses that can only run untargeted (or only targeted) say so here
    supports_targeted = True
    supports_untargeted = True

    def __init__(self, model: Optional[nn.Module] = None, *,
                 models: Union[None, Ensemble, Sequence[nn.Module]] = None, **options):
        name = type(self).__name__
        unknown = sorted(set(options) - set(_OPTION_NAMES))
        if unknown:
            raise TypeError(f"{name}: unexpected keyword argument {unknown[0]!r} (the shared options are "
                            f"{', '.join(_OPTION_NAMES)})")
        opts = AttackOptions(**options)
        opts.check(name)
        if (model is None) == (models is None):
            raise ValueError(f"{name}: pass exactly one of model=... or models=[...]")
        self.ensemble = _as_ensemble(name, model if model is not None else models, "model" if model is not None
                                     else "models")
        self.models: List[nn.Module] = list(self.ensemble.members)
        devices = {module_device(m, None) for m in self.models} - {None}
        if len(devices) > 1:
            raise ValueError(f"{name}: all models must be on one device, got {sorted(map(str, devices))}")
        self.amp = opts.amp
        self.batch_size = opts.batch_size
        self.streams = opts.streams
        self.conv_input_grad = opts.conv_input_grad
        self.attack_mode = opts.attack_mode
        self._seed = opts.seed
        self._generators: Dict[torch.device, torch.Generator] = {}
        self._side_streams: Dict[torch.device, List["torch.cuda.Stream"]] = {}

    @property
    def _route_convolutions(self) -> bool:
        """Whether forwards run inside :func:`routed_convolutions`: asked at every forward, so a model compiled
        after the attack was built is seen (a compiled model would recompile on the TorchFunctionMode)."""
        return self.conv_input_grad == "robustkit" and routing_applies(self.models)

    @property
    def model(self) -> nn.Module:
        """The first (for one model, the only) member."""
        return self.models[0]

    @property
    def seed(self) -> Optional[int]:
        return self._seed

    @seed.setter
    def seed(self, value: Optional[int]) -> None:
        """Re-seeds the attack's generator (the next call starts the sequence of ``value`` afresh)."""
        AttackOptions(seed=value).check(type(self).__name__)
        self._seed = value
        self._generators = {}

    def options(self) -> AttackOptions:
        """The shared options this attack was built with."""
        return AttackOptions(amp=self.amp, batch_size=self.batch_size, seed=self._seed, streams=self.streams,
                             conv_input_grad=self.conv_input_grad, attack_mode=self.attack_mode)

    # ---- public API -------------------------------------------------------------------------------------
    def __call__(self, x: Tensor, y: Tensor, target: TargetSpec = None, *,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        """The adversarial images only (for training loops): unlike ``run(...).adv`` it skips the forward
        pass that evaluates the final images for the result."""
        outputs = list(self._generate(x, y, target, generator))
        advs = [out.adv for _, out, _ in outputs]
        return advs[0] if len(advs) == 1 else torch.cat(advs)

    def run(self, x: Tensor, y: Tensor, target: TargetSpec = None, *,
            generator: Optional[torch.Generator] = None) -> AttackResult:
        """Attacks ``x`` (``[B, C, H, W]`` in [0, 1], finite, in the model's dtype) with true labels ``y``
        (``[B]`` integer classes of any integer dtype).

        ``target``: None (untargeted), an integer ``[B]`` tensor, ``"least_likely"``, ``"random"``, or a callable
        ``(logits, y) -> [B]`` target tensor. ``generator``: a ``torch.Generator`` on ``x``'s device for the
        attack's randomness in this call, in place of the attack's own (see :class:`AttackOptions` ``seed``).
        """
        parts = []
        for (x_c, y_c, t_c), out, contexts in self._generate(x, y, target, generator):
            with contexts():
                parts.append(self._result(x_c, y_c, t_c, out))
        return AttackResult.cat(parts)

    # ---- for subclasses ---------------------------------------------------------------------------------
    def _attack(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                generator: Optional[torch.Generator]) -> AttackOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement _attack")

    def autocast(self):
        """The context the model(s) run in: autocast to bfloat16 when ``amp=True``."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=_device_type(self.models[0]), dtype=torch.bfloat16)

    def member_logits(self, x: Tensor) -> List[Tensor]:
        """Each model's logits of ``x`` as ``[B, num_classes]`` tensors (graph kept for autograd): float32, or
        float64 for float64 models (so exact float64 runs stay exact); half-precision outputs are widened."""
        # the routing only changes the input-gradient backward: a forward without autograd skips its overhead
        routed = self._route_convolutions and x.device.type == "cpu" and torch.is_grad_enabled()
        with self.autocast(), routed_convolutions(routed):
            outs = self._forward_on_streams(x) if self._use_streams(x) else [m(x) for m in self.models]
        for i, out in enumerate(outs):
            if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
                shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"{type(self).__name__}: models[{i}] must return [B, num_classes] logits, got {shape}")
            if not out.is_floating_point():
                raise ValueError(f"{type(self).__name__}: models[{i}] must return floating-point logits, got "
                                 f"{_dtype_name(out.dtype)}")
        return [o if o.dtype == torch.float64 else o.float() for o in outs]

    def logits(self, x: Tensor) -> Tensor:
        """The ensemble's logits of ``x`` (the weighted mean of :meth:`member_logits`), graph kept."""
        return self.ensemble.combine(self.member_logits(x))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The ensemble's logits of ``x`` without a graph, float32 (float64 for float64 models)."""
        return self.logits(x)

    def check_classes(self, num_classes: int, label: Tensor, targeted: bool) -> None:
        """Raises a ValueError naming ``y`` (untargeted) or ``target`` when ``label`` holds a class
        ``>= num_classes``; attacks call it once, after their first forward has shown the models' output size."""
        what = "target" if targeted else "y"
        if label.numel() and int(label.max()) >= num_classes:
            raise ValueError(f"{type(self).__name__}: {what} must hold classes < {num_classes} (the models' "
                             f"output size), got {int(label.max())}")

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

    # ---- the shared driver ------------------------------------------------------------------------------
    def _generate(self, x: Tensor, y: Tensor, target: TargetSpec, generator: Optional[torch.Generator]
                  ) -> Iterator[Tuple[Tuple[Tensor, Tensor, Optional[Tensor]], AttackOutput, object]]:
        """Validates, resolves the target and runs ``_attack`` chunk by chunk; yields ``((x, y, target) of the
        chunk, its AttackOutput, the contexts to re-enter for work on the chunk's result)``."""
        y = self._check_inputs(x, y)
        if x.is_inference() or y.is_inference():  # made under torch.inference_mode(): autograd cannot save them
            with torch.inference_mode(False):
                x, y = x.clone(), y.clone()
        gen = self._generator_for(x.device, generator)
        contexts = self._contexts
        with contexts():
            needs_logits = isinstance(target, str) or (callable(target) and not isinstance(target, Tensor))
            clean_logits = self.predict(x) if needs_logits and x.shape[0] else None
            target_t = resolve_target(target, x, y, clean_logits, generator=gen, name=type(self).__name__)
        if target_t is not None and not self.supports_targeted:
            raise ValueError(f"{type(self).__name__} is untargeted only; pass target=None")
        if target_t is None and not self.supports_untargeted:
            raise ValueError(f"{type(self).__name__} needs a target")
        chunk = self.batch_size or max(1, x.shape[0])
        for start in range(0, max(1, x.shape[0]), chunk):
            sl = slice(start, start + chunk)
            x_c, y_c = x[sl].detach(), y[sl]
            t_c = None if target_t is None else target_t[sl]
            with contexts():
                out = self._attack(x_c, y_c, t_c, gen)
            out.adv = out.adv.detach()
            yield (x_c, y_c, t_c), out, contexts

    @contextlib.contextmanager
    def _contexts(self):
        """Autograd on (attacks need input gradients, also under ``torch.no_grad()`` and
        ``torch.inference_mode()``) and the attack mode."""
        with torch.inference_mode(False), torch.enable_grad(), _attack_mode(self.models, self.attack_mode):
            yield

    def _result(self, x: Tensor, y: Tensor, target: Optional[Tensor], out: AttackOutput) -> AttackResult:
        logits = self.predict(out.adv) if out.logits is None else out.logits.detach()
        linf, l2 = perturbation_norms(out.adv, x)
        return AttackResult(adv=out.adv, success=is_success(logits, y, target), logits=logits, linf=linf, l2=l2,
                            steps=out.steps, target=target, extras=dict(out.extras))

    def _generator_for(self, device: torch.device, generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"{type(self).__name__}: generator must be a torch.Generator or None, got "
                                f"{type(generator).__name__}")
            if torch.device(generator.device).type != device.type:
                raise ValueError(f"{type(self).__name__}: generator is on {generator.device} but x is on {device}")
            return generator
        if self._seed is None:
            return None
        g = self._generators.get(device)
        if g is None:
            g = torch.Generator(device=device)
            g.manual_seed(self._seed)
            self._generators[device] = g
        return g

    # ---- checks -----------------------------------------------------------------------------------------
    def _check_inputs(self, x: Tensor, y: Tensor) -> Tensor:
        """Validates ``x`` and ``y``; returns ``y`` as int64."""
        name = type(self).__name__
        check_image_type(name, x)
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point() or y.is_complex() \
                or y.dtype == torch.bool:
            got = f"{_dtype_name(y.dtype)} {list(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"{name}: y must be an integer [B] tensor with B = {x.shape[0]} (int64, or any "
                             f"integer dtype), got {got}")
        if y.device != x.device:
            raise ValueError(f"{name}: x and y must be on the same device, got {x.device} and {y.device}")
        model_device = module_device(self.models[0], None)
        if model_device is not None and model_device != x.device:
            raise ValueError(f"{name}: x is on {x.device} but the model is on {model_device}")
        model_dtype = _module_float_dtype(self.models[0])
        if model_dtype is not None and x.dtype != model_dtype:
            raise TypeError(f"{name}: x is {_dtype_name(x.dtype)} but the model's parameters are "
                            f"{_dtype_name(model_dtype)}; pass x.to({_dtype_name(model_dtype, 'torch.')}) (for "
                            "mixed precision use amp=True)")
        check_image_values(name, x)
        y = y.long()
        if y.numel() and int(y.min()) < 0:
            raise ValueError(f"{name}: y must hold classes >= 0, got {int(y.min())}")
        return y


class FixedBudgetAttack(Attack):
    """An attack that searches inside the ``norm`` ball of radius ``eps`` around each input (FGSM, PGD, ...).

    ``success`` and robust accuracy (``1 - success`` on correctly classified inputs) are its measures.
    Subclasses list the norms they support in ``norms``.
    """

    norms: Tuple[str, ...] = ("linf", "l2")

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float, norm: str, **options):
        super().__init__(model, **options)
        name = type(self).__name__
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
            raise ValueError(f"{name}: eps must be a finite number, got {eps!r}")
        if eps < 0:
            raise ValueError(f"{name}: eps must be >= 0, got {eps!r}")
        if norm not in self.norms:
            raise ValueError(f"{name}: norm must be one of {self.norms}, got {norm!r}")
        self.eps = float(eps)
        self.norm = norm


class MinimalNormAttack(Attack):
    """An attack that looks for the smallest perturbation in ``norm`` that succeeds (DeepFool, C&W, ...).

    It runs until success (or its iteration budget), so its success rate is not a robustness measure: the
    perturbation norms (``AttackResult.l2``/``linf``) are. Subclasses list the norms they support in ``norms``.
    """

    norms: Tuple[str, ...] = ("l2", "linf")

    def __init__(self, model: Optional[nn.Module] = None, *, norm: str, **options):
        super().__init__(model, **options)
        if norm not in self.norms:
            raise ValueError(f"{type(self).__name__}: norm must be one of {self.norms}, got {norm!r}")
        self.norm = norm


@contextlib.contextmanager
def _attack_mode(models: Sequence[nn.Module], mode: str):
    """Every module of ``models`` in eval mode inside (``mode="eval"``), each module's own flag restored after."""
    if mode == "train":
        yield
        return
    saved = [(module, module.training) for m in models for module in m.modules()]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        # per module, not model.train(flag): a model may hold modules in different modes (frozen batch norm)
        for module, flag in saved:
            module.training = flag


def _as_ensemble(owner: str, value, argument: str) -> Ensemble:
    if isinstance(value, Ensemble):
        return value
    if isinstance(value, nn.Module):
        if argument == "models":
            raise TypeError(f"{owner}: models must be a list of nn.Modules or an Ensemble; pass one model as "
                            f"model=...")
        return Ensemble([value])
    if argument == "model":
        raise TypeError(f"{owner}: model must be an nn.Module, got {type(value).__name__} (pass several models as "
                        "models=[...])")
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{owner}: models must be a list of nn.Modules, got {type(value).__name__}")
    if len(value) == 0:
        raise ValueError(f"{owner}: models must not be empty")
    for i, m in enumerate(value):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{owner}: models[{i}] must be an nn.Module, got {type(m).__name__}")
    return Ensemble(list(value))


def check_image_type(owner: str, x, argument: str = "x") -> None:
    """A one-line error naming ``argument`` unless ``x`` is a floating-point tensor shaped like a batch:
    ``[B, C, H, W]`` images, or ``[B, D]`` features. A 3-D tensor is refused because PyTorch's conv layers read
    it as one unbatched image, so a batch of grey images without its channel dim would fail deep inside the
    model (or, with B equal to the channel count, be classified as a single image)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = _dtype_name(x.dtype) if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{owner}: {argument} must be a floating-point tensor of images in [0, 1], got {got}")
    if x.dim() < 2:
        raise ValueError(f"{owner}: {argument} must be [B, ...] (images [B, C, H, W]), got shape {list(x.shape)}")
    if x.dim() == 3:
        raise ValueError(f"{owner}: {argument} must be [B, C, H, W] images or [B, D] features, got 3-D shape "
                         f"{list(x.shape)} (one-channel images need their channel dim: {argument}.unsqueeze(1))")


def check_image_values(owner: str, x: Tensor, argument: str = "x") -> None:
    """A one-line error naming ``argument`` unless every value of ``x`` is finite and in [0, 1] (NaN would pass
    a plain ``x.min() < 0`` test: every comparison with NaN is False)."""
    if not x.numel():
        return
    # one pass and one host sync on the common path: the minimum is NaN when any value is, and an infinity shows
    # in the minimum or the maximum; only a failing batch pays for finding the sample
    low, high = torch.stack(torch.aminmax(x)).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero()[0].item()
        raise ValueError(f"{owner}: {argument} must be finite, got NaN or inf in sample {bad}")
    if low < 0 or high > 1:
        raise ValueError(f"{owner}: {argument} must hold pixel values in [0, 1] (put robustkit.nn.Normalize inside "
                         f"the model instead of normalising the input), got range [{low:.4g}, {high:.4g}]")


def check_images(owner: str, x, argument: str = "x") -> None:
    """:func:`check_image_type` and :func:`check_image_values`: the checks every entry point that takes images
    runs (the attacks, ``training.fit``, the defenses' objectives)."""
    check_image_type(owner, x, argument)
    check_image_values(owner, x, argument)


def _module_float_dtype(m: nn.Module) -> Optional[torch.dtype]:
    """The dtype of the model's first floating-point parameter (None for a model without one)."""
    for t in m.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


def _device_type(m: nn.Module) -> str:
    return module_device(m).type


def _dtype_name(dtype: torch.dtype, prefix: str = "") -> str:
    return prefix + str(dtype).replace("torch.", "")


__all__ = ["Attack", "AttackResult", "AttackOutput", "AttackOptions", "FixedBudgetAttack", "MinimalNormAttack",
           "perturbation_norms", "is_success", "TargetSpec", "check_images", "check_image_type",
           "check_image_values"]
