"""``fit``: the training loop for clean and adversarial training (any objective of :mod:`.objective`).

One optimizer step is: ``objective(model, x, y)`` (the attack runs inside it, in eval mode), backward, step,
the constraints, the learning-rate schedule. Around it: seeded data order through a ``DistributedSampler``
(also in a single process, so one process and N torchrun ranks see the same global batches), bf16 autocast,
a progress bar, per-epoch evaluation, the catastrophic-overfitting guard, and an atomic checkpoint after every
epoch from which a killed run resumes to the same weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset
from tqdm.auto import tqdm

from robustkit.attacks import PGD
from robustkit.datasets import ImageTensorDataset
from robustkit.training import checkpoint as ckpt
from robustkit.training.distributed import (DistributedInfo, all_reduce_sum, barrier, broadcast_flag,
                                            distributed_context)
from robustkit.training.objective import CrossEntropy, Objective, check_images, objective_passes, unwrap_model
from robustkit.training.schedules import SCHEDULES, make_scheduler, resolve_schedule
from robustkit.training.warmup import check_eps_warmup, warmup_scale

Constraint = Callable[[nn.Module], Any]
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class History:
    """What :func:`fit` did: one dict per finished epoch (``epoch``, ``lr``, ``train_loss``, ``train_accuracy``
    (on the training inputs the objective used, e.g. adversarial), the objective's mean metrics,
    ``clean_accuracy`` / ``robust_accuracy`` on ``eval_data``, ``guard_robust_accuracy``, ``seconds``,
    ``images_per_second``), and why training stopped early, if it did."""

    epochs: List[Dict[str, Any]] = field(default_factory=list)
    stopped: Optional[str] = None
    restored_epoch: Optional[int] = None

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.epochs[index]

    def column(self, key: str) -> List[Any]:
        """``[epoch[key] for each epoch]`` (None where an epoch lacks it)."""
        return [epoch.get(key) for epoch in self.epochs]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def write_json(self, path: Union[str, os.PathLike]) -> None:
        path = pathlib.Path(path)
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(temporary, path)


# ---- argument checks ---------------------------------------------------------------------------------------
def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"fit: {name} must be a positive int, got {value!r}")
    return value


def _number(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise ValueError(f"fit: {name} must be a {'positive' if positive else 'non-negative'} finite number, "
                         f"got {value!r}")
    return float(value)


def _check_dataset(name: str, data) -> Dataset:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        data = TensorDataset(*data)
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise TypeError(f"fit: {name} must be a Dataset of (image, label) pairs or an (images, labels) tuple, "
                        f"got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"fit: {name} is empty")
    images = _tensor_images(data)
    if images is not None:  # in memory: check the whole set once; other datasets are checked per batch
        check_images("fit", images, name)
    return data


def _tensor_images(data: Dataset) -> Optional[Tensor]:
    if isinstance(data, ImageTensorDataset):
        return None  # uint8 pixels / 255: in [0, 1] by construction
    if isinstance(data, TensorDataset):
        return data.tensors[0]
    return None


# ---- batches -----------------------------------------------------------------------------------------------
def _fast_indexable(data: Dataset) -> bool:
    """Datasets read a whole batch with one indexing op (no per-sample Python work)."""
    if isinstance(data, Subset):
        return _fast_indexable(data.dataset)
    return isinstance(data, (ImageTensorDataset, TensorDataset))


def _take(data: Dataset, index: Tensor) -> Tuple[Tensor, Tensor]:
    if isinstance(data, Subset):
        return _take(data.dataset, torch.as_tensor(data.indices, dtype=torch.int64)[index])
    if isinstance(data, TensorDataset):
        return data.tensors[0][index], data.tensors[1][index]
    return data[index]


def _batches(data: Dataset, indices: List[int], batch_size: int, num_workers: int) -> Iterator[Tuple[Tensor, Tensor]]:
    chunks = [indices[start:start + batch_size] for start in range(0, len(indices), batch_size)]
    if _fast_indexable(data):
        for chunk in chunks:
            yield _take(data, torch.as_tensor(chunk, dtype=torch.int64))
    else:
        yield from DataLoader(data, batch_sampler=chunks, num_workers=num_workers)


def _to_device(name: str, x: Tensor, y: Tensor, device: torch.device, check: bool) -> Tuple[Tensor, Tensor]:
    if check:
        check_images("fit", x, name)
    if not isinstance(y, Tensor) or y.dtype != torch.int64:
        raise ValueError(f"fit: {name} labels must be int64 class indices, got "
                         f"{y.dtype if isinstance(y, Tensor) else type(y).__name__}")
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


# ---- evaluation --------------------------------------------------------------------------------------------
def _evaluate(model: nn.Module, data: Dataset, attack, batch_size: int, device: torch.device,
              info: DistributedInfo) -> Dict[str, float]:
    """Clean and robust accuracy of ``model`` (eval mode) on ``data``, sharded over ranks. Robust accuracy
    counts an image as robust when it is classified correctly both clean and under ``attack``."""
    indices = list(range(info.rank, len(data), info.world_size))
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # [clean correct, robust correct, total]
    was_training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for x, y in _batches(data, indices, batch_size, 0):
            x, y = _to_device("eval_data", x, y, device, check=not _fast_indexable(data))
            with torch.no_grad():
                clean = model(x).argmax(dim=1) == y
            counts[0] += clean.sum()
            counts[2] += y.numel()
            if attack is not None:
                adv = attack(x, y)
                with torch.no_grad():
                    robust = clean & (model(adv).argmax(dim=1) == y)
                counts[1] += robust.sum()
    finally:
        for m, training in was_training:
            m.training = training
    clean, robust, total = all_reduce_sum(counts, info).tolist()
    result = {"clean_accuracy": clean / total}
    if attack is not None:
        result["robust_accuracy"] = robust / total
    return result


# ---- the overfitting guard ---------------------------------------------------------------------------------
@dataclass
class _Guard:
    """Wong et al. 2020's early stop, run after each epoch: PGD accuracy on one fixed batch; falling more than
    ``drop`` below the best epoch's means catastrophic overfitting, and the best epoch's weights win. (Wong et al.
    compare with the previous epoch; a collapse spread over several epochs, which we saw on MNIST, slips
    through that test.)"""

    attack: Any
    x: Tensor
    y: Tensor
    drop: float
    best: Optional[float] = None
    good_epoch: int = 0
    good_state: Optional[Dict[str, Tensor]] = None

    def accuracy(self, model: nn.Module) -> float:
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            adv = self.attack(self.x, self.y)
            with torch.no_grad():
                return float((model(adv).argmax(dim=1) == self.y).float().mean())
        finally:
            for m, training in modes:
                m.training = training


def _make_guard(objective, enabled: Optional[bool], model: nn.Module, source: Dataset, size: int, drop: float,
                device: torch.device) -> Optional[_Guard]:
    wants = bool(getattr(objective, "guard_overfitting", False))
    if enabled is None:
        enabled = wants
    if not enabled:
        return None
    eps = getattr(objective, "eps", None)
    if eps is None:
        raise ValueError("fit: overfit_guard needs an objective with an .eps (the PGD check's radius)")
    x, y = _take(source, torch.arange(min(size, len(source)))) if _fast_indexable(source) else \
        next(iter(DataLoader(source, batch_size=size)))
    x, y = _to_device("guard data", x, y, device, check=True)
    attack = PGD(model, eps=eps, step_size=eps / 4, steps=5, random_start=True)
    return _Guard(attack=attack, x=x, y=y, drop=drop)


# ---- the run's identity ------------------------------------------------------------------------------------
def _describe(thing) -> str:
    """A stable description: the object's own ``__repr__`` when its class defines one, else its type."""
    if thing is None:
        return "None"
    if callable(thing) and hasattr(thing, "__qualname__"):
        return f"{getattr(thing, '__module__', '')}.{thing.__qualname__}"
    if type(thing).__repr__ is not object.__repr__:
        return repr(thing)
    return f"{type(thing).__module__}.{type(thing).__qualname__}"


def _signature(model: nn.Module, objective, config: Dict[str, Any], train_size: int) -> Dict[str, Any]:
    shapes = [[name, list(p.shape)] for name, p in model.state_dict().items()]
    return {"model": f"{type(model).__module__}.{type(model).__qualname__}", "state_shapes": shapes,
            "objective": _describe(objective), "train_size": train_size, **config}


def _gather_rng(info: DistributedInfo) -> List[Dict[str, Any]]:
    state = ckpt.rng_state()
    if not info.enabled:
        return [state]
    states: List[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(states, state)
    return states


# ---- fit ---------------------------------------------------------------------------------------------------
def fit(model: nn.Module, train_data, objective: Optional[Objective] = None, *, epochs: int = 1,
        batch_size: int = 128, optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
        weight_decay: float = 0.0, schedule: Union[str, Callable[[float], float]] = "constant",
        eval_data=None, eval_attack=None, eval_batch_size: int = 500, checkpoint_dir=None, resume: bool = False,
        amp: bool = False, seed: int = 0, progress: bool = True, constraints: Sequence[Constraint] = (),
        overfit_guard: Optional[bool] = None, guard_size: int = 256, guard_drop: float = 0.2,
        eps_warmup: float = 0.0, device=None, num_workers: int = 0, log_every: int = 20) -> History:
    """Train ``model`` in place on ``train_data`` with ``objective`` and return the :class:`History`.

    Args:
        model: the module to train (images in [0, 1] to logits). Under ``torchrun`` it is wrapped in
            ``DistributedDataParallel`` for the weight update; attacks stay bound to ``model`` itself.
        train_data: a Dataset of ``(image, label)`` pairs or an ``(images, labels)`` tuple; images in [0, 1].
        objective: ``objective(model, x, y) -> ObjectiveOutput`` (e.g. ``rk.defenses.AdversarialTraining``);
            None is cross-entropy on the clean images. Objectives with ``passes()`` (free training) drive
            several optimizer steps per batch.
        epochs, batch_size: passes over ``train_data`` and the *global* batch (split evenly over ranks).
        optimizer: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"``; ``lr``, ``weight_decay``.
        schedule: ``"constant"``, ``"cosine"``, ``"piecewise"`` (/10 at 50% and 75%) or ``"cyclic"`` (0 -> lr at
            40% -> 0, Wong et al.), applied per optimizer step; or a callable ``progress in [0, 1] -> factor``.
        eval_data, eval_attack: after every epoch, clean accuracy on ``eval_data`` and, with ``eval_attack``
            (bound to ``model``), robust accuracy.
        checkpoint_dir: write ``checkpoint.pt`` (model, optimizer, scheduler, RNG states, epoch, history) and
            ``history.json`` there after every epoch (rank 0 only). ``resume=True`` continues the run saved there
            (a folder holding another run's checkpoint is refused); without it a folder holding a checkpoint is
            refused too, so that no run is overwritten by accident.
        amp: run the objective (attack and training forward) under bfloat16 autocast; weights stay float32.
        seed: seeds torch, ``random`` and NumPy inside the run (rank r uses ``seed + r``) and the data order;
            the caller's RNG states are restored afterwards.
        constraints: callables ``constraint(model)`` run under ``torch.no_grad()`` after every optimizer step.
        overfit_guard: after each epoch run PGD-5 on a fixed batch (``guard_size`` images of ``eval_data``, else
            of ``train_data``); if its accuracy falls more than ``guard_drop`` below the best epoch's, stop and
            restore the best epoch's weights. None: on for objectives with ``guard_overfitting = True``
            (:class:`robustkit.defenses.FastAdversarialTraining`).
        eps_warmup: the fraction of the optimizer steps over which the objective's perturbation budget (ε and
            the attack's step size) ramps linearly up to its full value (:mod:`robustkit.training.warmup`); 0
            (the default) trains at the full budget from the first step. A large budget from the start can
            leave the network stuck at chance (Madry PGD training at ε = 0.3 on MNIST).
        device: where to train (default: the model's device). ``num_workers``: DataLoader workers for datasets
            that are not in-memory tensors. ``log_every``: steps between progress-bar updates (each costs a sync).

    The model is left in eval mode. Example::

        >>> atk = rk.attacks.PGD(model, eps=0.3, step_size=0.01, steps=40)
        >>> history = rk.training.fit(model, rk.datasets.mnist("train"), rk.defenses.AdversarialTraining(atk),
        ...                           epochs=10, optimizer="adam", lr=1e-3, checkpoint_dir="runs/madry", resume=True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        raise ValueError("fit: model must be the bare module; fit wraps it in DistributedDataParallel itself")
    train_data = _check_dataset("train_data", train_data)
    if eval_data is not None:
        eval_data = _check_dataset("eval_data", eval_data)
    if eval_attack is not None:
        if eval_data is None:
            raise ValueError("fit: eval_attack needs eval_data")
        if model not in getattr(eval_attack, "models", ()):
            raise ValueError("fit: eval_attack is bound to another model; build it with the model being trained")
    objective = CrossEntropy() if objective is None else objective
    if not callable(objective):
        raise TypeError(f"fit: objective must be callable as objective(model, x, y), got {type(objective).__name__}")
    check_model = getattr(objective, "check_model", None)
    if check_model is not None:
        check_model(model)
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    _positive_int("eval_batch_size", eval_batch_size)
    _positive_int("log_every", log_every)
    _positive_int("guard_size", guard_size)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"fit: optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    _number("lr", lr, positive=True)
    _number("momentum", momentum)
    _number("weight_decay", weight_decay)
    if not 0 < guard_drop <= 1 or isinstance(guard_drop, bool):
        raise ValueError(f"fit: guard_drop must be in (0, 1], got {guard_drop!r}")
    resolve_schedule(schedule)
    eps_warmup = check_eps_warmup(objective, eps_warmup)
    constraints = list(constraints)
    for i, constraint in enumerate(constraints):
        if not callable(constraint):
            raise TypeError(f"fit: constraints[{i}] must be callable as constraint(model), got "
                            f"{type(constraint).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"fit: seed must be an int, got {seed!r}")
    if not isinstance(resume, bool):
        raise TypeError(f"fit: resume must be a bool, got {type(resume).__name__}")
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)

    config = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "momentum": momentum,
              "weight_decay": weight_decay, "schedule": schedule if isinstance(schedule, str) else _describe(schedule),
              "amp": bool(amp), "seed": seed, "constraints": [_describe(c) for c in constraints]}
    if eps_warmup:   # only when used, so that checkpoints written before the option existed still resume
        config["eps_warmup"] = eps_warmup
    signature = _signature(model, objective, config, len(train_data))
    folder = _check_checkpoint_dir(checkpoint_dir)
    saved = _load_saved(folder, signature, resume, device)

    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda_devices), distributed_context(device) as info:
            return _run(model, train_data, objective, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                        lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule, eval_data=eval_data,
                        eval_attack=eval_attack, eval_batch_size=eval_batch_size, folder=folder, saved=saved,
                        signature=signature, amp=amp, seed=seed, progress=progress, constraints=constraints,
                        overfit_guard=overfit_guard, guard_size=guard_size, guard_drop=guard_drop,
                        eps_warmup=eps_warmup, device=device, num_workers=num_workers, log_every=log_every,
                        info=info)
    finally:
        if eps_warmup:
            objective.budget_scale = 1.0
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _check_checkpoint_dir(checkpoint_dir) -> Optional[pathlib.Path]:
    """``checkpoint_dir`` as a path, refused up front (not after the first epoch) when it or a parent is a file."""
    if checkpoint_dir is None:
        return None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"fit: checkpoint_dir must be a folder path or None, got {type(checkpoint_dir).__name__}")
    folder = pathlib.Path(checkpoint_dir)
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                where = "is a file" if existing == folder else f"is under the file {str(existing)!r}"
                raise ValueError(f"fit: checkpoint_dir {str(folder)!r} {where}, not a folder")
            break
    return folder


def _load_saved(folder: Optional[pathlib.Path], signature: Dict[str, Any], resume: bool,
                device: torch.device) -> Optional[Dict[str, Any]]:
    if folder is None:
        if resume:
            raise ValueError("fit: resume=True needs a checkpoint_dir")
        return None
    saved = ckpt.load_checkpoint(folder, map_location=device)
    if saved is None:
        return None
    differs = ckpt.signature_mismatch(saved["signature"], signature)
    if differs:
        raise ValueError(f"fit: checkpoint_dir {folder} holds another run's checkpoint (it differs in "
                         f"{', '.join(differs)}); use another folder or the same settings")
    if not resume:
        raise ValueError(f"fit: checkpoint_dir {folder} already holds this run's checkpoint (epoch "
                         f"{saved['epoch']}); pass resume=True to continue it or use another folder")
    return saved


def _make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _run(model: nn.Module, train_data: Dataset, objective, *, epochs, batch_size, optimizer, lr, momentum,
         weight_decay, schedule, eval_data, eval_attack, eval_batch_size, folder, saved, signature, amp, seed,
         progress, constraints, overfit_guard, guard_size, guard_drop, eps_warmup, device, num_workers,
         log_every, info: DistributedInfo) -> History:
    if batch_size % info.world_size:
        raise ValueError(f"fit: batch_size ({batch_size}) must be divisible by the number of processes "
                         f"({info.world_size})")
    local_batch = batch_size // info.world_size
    train_model: nn.Module = model
    if info.enabled:
        device_ids = [device.index or 0] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    sampler = DistributedSampler(train_data, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)
    steps_per_epoch = math.ceil(len(sampler) / local_batch)
    passes_per_batch = int(getattr(objective, "passes_per_batch", 1))
    opt = _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, momentum, weight_decay)
    scheduler = make_scheduler(opt, schedule, epochs * steps_per_epoch * passes_per_batch)
    guard = _make_guard(objective, overfit_guard, model, eval_data if eval_data is not None else train_data,
                        guard_size, guard_drop, device) if info.is_main else None
    guard_on = broadcast_flag(guard is not None, info, device)
    history = History()
    start_epoch = 0
    _seed_everything(seed + info.rank)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history = History(**saved["history"])
        start_epoch = int(saved["epoch"])
        states = saved["rng"]
        if len(states) == info.world_size:
            ckpt.set_rng_state(states[info.rank])
        else:
            warnings.warn(f"fit: the checkpoint was written by {len(states)} processes, this run has "
                          f"{info.world_size}; RNG streams are reseeded, so the continuation is not bit-identical "
                          "to the original run", stacklevel=3)
            _seed_everything(seed * 1000 + start_epoch + info.rank)
        if saved.get("objective") is not None:
            objective.load_state_dict(saved["objective"])
        if guard is not None and saved.get("guard") is not None:
            guard.best = saved["guard"]["best"]
            guard.good_epoch = saved["guard"]["good_epoch"]
            guard.good_state = saved["guard"]["good_state"]
    if history.stopped is not None:
        start_epoch = epochs  # the saved run already ended (early stop): nothing left to do
    check_batches = not _fast_indexable(train_data)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        indices = list(iter(sampler))
        train_model.train()
        bar = tqdm(total=len(indices) * info.world_size, unit="img", unit_scale=True, leave=False,
                   desc=f"epoch {epoch + 1}/{epochs}", disable=not (progress and info.is_main))
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # [loss * n, correct, n] over all passes
        images = 0
        metric_sums: Dict[str, Any] = {}
        metric_counts: Dict[str, int] = {}
        started = time.perf_counter()
        for step, (x, y) in enumerate(_batches(train_data, indices, local_batch, num_workers)):
            x, y = _to_device("train_data", x, y, device, check_batches)
            if eps_warmup:
                objective.budget_scale = warmup_scale(epoch * steps_per_epoch + step, epochs * steps_per_epoch,
                                                      eps_warmup)
            for out in _passes(objective, train_model, x, y, amp, device):
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                if constraints:
                    with torch.no_grad():
                        for constraint in constraints:
                            constraint(model)
                scheduler.step()
                with torch.no_grad():
                    n = y.numel()
                    totals[0] += out.loss.detach().double() * n
                    totals[1] += (out.logits.detach().argmax(dim=1) == y).sum()
                    totals[2] += n
                for key, value in out.metrics.items():
                    value = value.detach().double() if isinstance(value, Tensor) else float(value)
                    metric_sums[key] = metric_sums.get(key, 0.0) + value
                    metric_counts[key] = metric_counts.get(key, 0) + 1
            images += y.numel()
            bar.update(y.numel() * info.world_size)
            if progress and info.is_main and (step % log_every == 0 or step == steps_per_epoch - 1):
                loss_sum, correct, count = totals.tolist()  # the sync, only when someone is watching
                bar.set_postfix(loss=f"{loss_sum / count:.4f}", adv_acc=f"{correct / count:.3f}",
                                lr=f"{scheduler.get_last_lr()[0]:.3g}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - started
        loss_sum, correct, count = all_reduce_sum(totals, info).tolist()
        record: Dict[str, Any] = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0],
                                  "train_loss": loss_sum / count, "train_accuracy": correct / count}
        for key, value in metric_sums.items():
            record[key] = float(value) / metric_counts[key]
        record["seconds"] = seconds
        if eps_warmup:
            record["budget_scale"] = objective.budget_scale   # where the ramp stood at the epoch's last step
        images_total = images * info.world_size  # equal shards (the sampler pads)
        record["images_per_second"] = images_total / seconds if seconds > 0 else float("nan")
        if eval_data is not None:
            eval_started = time.perf_counter()
            record.update(_evaluate(model, eval_data, eval_attack, eval_batch_size, device, info))
            record["eval_seconds"] = time.perf_counter() - eval_started
        collapsed = False
        if guard_on:
            collapsed = _guard_epoch(guard, model, record, epoch, info, device)
        history.epochs.append(record)
        if collapsed:
            _restore_good(guard, model, history, record, info, device)
        if progress and info.is_main:
            tqdm.write(_summary(record, epochs))
        rng = _gather_rng(info)
        if folder is not None and info.is_main:
            _write(folder, model, opt, scheduler, rng, epoch + 1, history, signature, guard, objective)
        barrier(info)
        if collapsed:
            break
    model.eval()
    return history


def _passes(objective, model: nn.Module, x: Tensor, y: Tensor, amp: bool, device: torch.device):
    """The objective's optimizer passes on one batch, each produced under autocast when ``amp``; the caller's
    backward runs outside autocast, as PyTorch recommends."""
    passes = objective_passes(objective, model, x, y)
    while True:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = next(passes, None)
        if out is None:
            return
        yield out


def _guard_epoch(guard: Optional[_Guard], model: nn.Module, record: Dict[str, Any], epoch: int,
                 info: DistributedInfo, device: torch.device) -> bool:
    """Rank 0 measures; every rank learns whether training collapsed."""
    collapsed = False
    if guard is not None:
        accuracy = guard.accuracy(model)
        record["guard_robust_accuracy"] = accuracy
        collapsed = guard.best is not None and accuracy < guard.best - guard.drop
        if guard.best is None or accuracy >= guard.best:
            guard.best = accuracy
            guard.good_epoch = epoch + 1
            guard.good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return broadcast_flag(collapsed, info, device)


def _restore_good(guard: Optional[_Guard], model: nn.Module, history: History, record: Dict[str, Any],
                  info: DistributedInfo, device: torch.device) -> None:
    if guard is not None:
        model.load_state_dict(guard.good_state)
        history.stopped = (f"catastrophic overfitting after epoch {record['epoch']}: PGD accuracy on the guard batch "
                           f"fell from {guard.best:.3f} (epoch {guard.good_epoch}) to "
                           f"{record['guard_robust_accuracy']:.3f}; restored the weights of epoch {guard.good_epoch}")
        history.restored_epoch = guard.good_epoch
        warnings.warn(f"fit: {history.stopped}", stacklevel=4)
    if info.enabled:  # every rank takes rank 0's restored weights
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)


def _write(folder: pathlib.Path, model, opt, scheduler, rng, epoch: int, history: History, signature, guard,
           objective) -> None:
    guard_state = None
    if guard is not None:
        guard_state = {"best": guard.best, "good_epoch": guard.good_epoch, "good_state": guard.good_state}
    ckpt.save_checkpoint(folder, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                  "scheduler": scheduler.state_dict(), "rng": rng, "epoch": epoch,
                                  "history": history.to_dict(), "signature": signature, "guard": guard_state,
                                  # objectives with state across batches (free training's perturbation)
                                  "objective": objective.state_dict() if hasattr(objective, "state_dict") else None})
    history.write_json(folder / "history.json")


def _summary(record: Dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['train_loss']:.4f}",
             f"train acc {record['train_accuracy']:.4f}", f"{record['images_per_second']:.0f} img/s"]
    for key in ("clean_accuracy", "robust_accuracy", "guard_robust_accuracy"):
        if key in record:
            parts.append(f"{key.replace('_', ' ')} {record[key]:.4f}")
    return "  ".join(parts)


__all__ = ["fit", "History", "OPTIMIZERS", "SCHEDULES"]
