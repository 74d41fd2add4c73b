"""The streaming, resumable, shardable evaluation loop: :func:`evaluate`."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import time
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from robustkit.attacks.base import Attack
from robustkit.eval import distributed as D
from robustkit.eval.describe import describe_attack, device_description, model_fingerprint, software_versions
from robustkit.eval.gradcam import grad_cam
from robustkit.eval.records import RecordError, RecordWriter, has_records, read_records
from robustkit.eval.storage import (OutputLock, dumps, read_json, remove_stale_temporaries, write_atomic,
                                     write_json)
from robustkit.eval.summary import ALL_METRICS, headline_budget, summarize
from robustkit.nn import module_device

DataSpec = Union[DataLoader, Dataset, Sequence[Tensor]]
RUN_FILE, RESULTS_FILE, EXAMPLES_FILE = "run.json", "results.json", "examples.pt"
CHECKS_FILE = "checks.json"
CHECK_LEVELS = ("full", "static", "off")
TARGETS = (None, "least_likely", "random")


def batch_seed(seed: int, batch: int, attack_index: int) -> int:
    """The seed of one attack on one batch: a function of (seed, batch index, attack index) only, so a batch
    gets the same randomness whether it runs first, after a resume, or on another rank. Attack index -1 seeds
    the batch's clean forwards, -2 the report's example forwards (Grad-CAM of batch 0)."""
    return derived_seed(seed, batch, attack_index)


def derived_seed(*parts) -> int:
    """A 63-bit torch seed that is a function of ``parts`` alone (SHA-256 of ``"p0:p1:..."``): independent
    streams for (run seed, batch, attack) here and for (run seed, step name) in ``robustkit.reproduce``."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def evaluate(model: nn.Module, data: DataSpec, attacks: Union[Mapping[str, Attack], Sequence[Attack]], *,
             out: Union[str, os.PathLike], metrics: Sequence[str] = ALL_METRICS, batch_size: Optional[int] = None,
             limit: Optional[int] = None, only_correct: bool = False, correct_for: Sequence[nn.Module] = (),
             per_class: Optional[int] = None, transfer_to: Optional[Mapping[str, nn.Module]] = None, seed: int = 0,
             device: Union[str, torch.device, None] = None, resume: bool = True, report: bool = True,
             progress: bool = True, num_workers: int = 0, eps_grid: Optional[Sequence[float]] = None,
             examples: int = 8, top_k: int = 10, model_name: str = "model",
             target: Optional[str] = None, checks: str = "full", defense: Optional[Any] = None) -> dict:
    """Evaluates ``model`` against each attack on ``data`` and writes ``out/results.json``.

    Streams over the data in batches (a tqdm bar shows img/s and the running worst-case robust accuracy);
    every finished batch is appended to ``out/records/rank-<r>.jsonl``. Called again with the same arguments
    (``resume=True``), it skips the finished batches and ends with the same numbers as an uninterrupted run;
    it refuses to resume a directory written with other settings. Each attack's randomness on batch ``b`` is
    seeded from ``(seed, b)`` (:func:`batch_seed`), and so is the model's: torch's global generator and every
    ``torch.Generator`` a module holds (``RandomResizePad(seed=...)``'s) are reseeded for each batch's clean
    forward and each attack (:func:`seeded`), then restored, so a randomized model resumed mid-run makes the
    draws of an uninterrupted run. Under ``torchrun`` every rank runs every ``world``-th
    batch, rank 0 merges the records, and all ranks return the merged results.

    Args:
        model: the classifier under evaluation (images in [0, 1] -> logits). It is put in eval mode and moved
            to ``device``; the attacks must have been built on it (or on other models, for transfer).
        data: a DataLoader (its dataset, batch size and workers are used, in dataset order), a Dataset of
            ``(image, label)`` pairs, or an ``(images, labels)`` pair of tensors.
        attacks: ``{name: attack}`` or a list of attacks (named after their classes).
        metrics: optional analyses, a subset of ``("per_class", "confusion", "curve", "transfer")``.
        limit: evaluate at most this many images (after filtering). ``per_class``: at most n per class.
        only_correct: keep only images that ``model`` and every model of ``correct_for`` classify correctly.
        transfer_to: ``{name: model}`` on which every attack's adversarial images are also evaluated; gives
            the transfer-matrix row of each attack (``results["transfer"]``).
        eps_grid: the budgets of the accuracy-vs-eps curve of minimal-norm attacks (default: 21 even steps).
        examples: how many images of the first batch to keep for the report's image grid and Grad-CAM.
        report: also write ``results.csv`` and ``report.html`` with plots.
        target: None (untargeted), ``"least_likely"`` or ``"random"``: every attack runs targeted toward that
            class of each image (``attack.run(x, y, target)``; random targets are drawn from the batch's seed).
        checks: :func:`robustkit.eval.checks.check_model` on the first images before the run: ``"full"``
            (with the attack-curve probes at the first fixed-budget attack's eps), ``"static"`` (mode, outputs,
            randomness, gradients only) or ``"off"``. Findings are warned and listed in ``results["warnings"]``.
        defense: a JSON-able description of the input defenses wrapped around ``model`` (their hyperparameters
            are not in its state dict); recorded as ``settings["defense"]``, so a resume with another is refused.

    Returns the results object (see :mod:`robustkit.eval.summary`).

    Example::

        >>> res = evaluate(model, robustkit.datasets.mnist("test"), {"pgd": PGD(model, eps=0.3, steps=40)},
        ...                out="runs/lenet", limit=1000, batch_size=250)
        >>> res["attacks"]["pgd"]["metrics"]["robust_accuracy"]
    """
    named = _name_attacks(attacks)
    if target not in TARGETS:
        raise ValueError(f"evaluate: target must be one of {TARGETS}, got {target!r}")
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise ValueError(f"evaluate: metrics must be a subset of {ALL_METRICS}, got unknown {sorted(unknown)}")
    for arg, value in (("limit", limit), ("per_class", per_class), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"evaluate: {arg} must be a positive int or None, got {value!r}")
    out_dir = pathlib.Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out: {str(out_dir)!r} is a file, not a directory")
    if checks not in CHECK_LEVELS:
        raise ValueError(f"evaluate: checks must be one of {CHECK_LEVELS}, got {checks!r}")
    training_modules = [n or type(m).__name__ for n, m in model.named_modules() if m.training]
    rank, world = D.rank_and_world()
    device = torch.device(device) if device is not None else module_device(model)
    transfer_to = dict(transfer_to or {})
    for m in [model, *correct_for, *transfer_to.values()]:
        m.eval().to(device)
    dataset, loader_batch, workers, collate = _resolve_data(data)
    batch_size = batch_size or loader_batch or 100
    num_workers = num_workers or workers

    settings = {"attacks": {n: describe_attack(a) for n, a in named.items()}, "seed": seed,
                "batch_size": batch_size, "limit": limit, "only_correct": only_correct, "per_class": per_class,
                "model": model_fingerprint(model), "correct_for": [model_fingerprint(m) for m in correct_for],
                "transfer_to": {n: model_fingerprint(m) for n, m in transfer_to.items()},
                "data": {"type": type(dataset).__name__, "size": len(dataset)}, "metrics": list(metrics),
                "target": target}
    if defense is not None:    # only when given: runs without one keep their fingerprint
        settings["defense"] = defense
    fingerprint = settings_fingerprint(settings)
    lock = OutputLock(out_dir, rank)
    lock_error: Optional[BaseException] = None
    try:
        lock.acquire()
    except OSError as error:
        lock_error = error
    if D.any_rank_failed(lock_error is not None):
        lock.release()
        raise lock_error if lock_error is not None else FileExistsError(
            f"out: another process is evaluating into {str(out_dir)!r} (another rank could not take its lock)")
    try:
        if rank == 0 and checks != "off":
            _write_checks(out_dir, model, dataset, named, collate, device, checks, training_modules, seed)
        elif rank == 0:
            (out_dir / CHECKS_FILE).unlink(missing_ok=True)
        return _evaluate_locked(model, dataset, named, out_dir, settings, fingerprint, resume, correct_for,
                                only_correct, per_class, limit, batch_size, device, collate, num_workers, rank,
                                world, seed, transfer_to, progress, examples, target, model_name, metrics,
                                eps_grid, top_k, report)
    finally:
        lock.release()


def settings_fingerprint(settings: dict) -> str:
    """The hash every record of a run carries: SHA-256 over the run's settings as JSON, 16 hex digits."""
    return hashlib.sha256(dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


_PLAN_ERRORS = {"FileExistsError": FileExistsError, "ValueError": ValueError, "RecordError": RecordError,
                "DiskFullError": OSError}


def _evaluate_locked(model, dataset, named, out_dir, settings, fingerprint, resume, correct_for, only_correct,
                     per_class, limit, batch_size, device, collate, num_workers, rank, world, seed, transfer_to,
                     progress, examples, target, model_name, metrics, eps_grid, top_k, report) -> dict:
    plan = None
    if rank == 0:
        try:
            plan = _plan_run(out_dir, settings, resume, dataset, model, correct_for, only_correct, per_class,
                             limit, batch_size, device, collate)
            plan["fingerprint"] = fingerprint
        except (ValueError, OSError) as error:
            plan = {"error": (type(error).__name__, str(error))}
    plan = D.broadcast_object(plan)
    if "error" in plan:
        kind, message = plan["error"]
        raise _PLAN_ERRORS.get(kind, ValueError)(message)
    # every rank must evaluate the same thing (e.g. a randomly initialised model built without a seed differs)
    if D.any_rank_failed(fingerprint != plan["fingerprint"]):
        raise ValueError("evaluate: the ranks disagree on the model weights, attacks or data (their settings "
                         "differ from rank 0's); build the model identically on every rank")

    selection: List[int] = plan["selection"]
    batches = [selection[i:i + batch_size] for i in range(0, len(selection), batch_size)]
    records = read_records(out_dir, fingerprint=fingerprint, batches=batches, attacks=list(named))
    done = {r["batch"] for r in records}
    mine = D.shard(range(len(batches)), rank, world)
    todo = [b for b in mine if b not in done]
    # the report's example images come from batch 0; redo them when a resume finds them missing
    redo_examples = (examples > 0 and rank == 0 and bool(batches) and 0 not in todo
                     and not (out_dir / EXAMPLES_FILE).exists())
    failed = False
    try:
        _run_batches(model, dataset, batches, todo, named, transfer_to, out_dir, rank, seed, device, collate,
                     num_workers, progress and rank == 0, examples, target, fingerprint,
                     total=sum(len(batches[b]) for b in mine), redo_examples=redo_examples)
    except BaseException:
        failed = True
        raise
    finally:
        if D.any_rank_failed(failed) and not failed:
            raise RuntimeError(f"evaluate: another rank failed; rank {rank} stops (finished batches are kept)")

    D.barrier()
    merge_error: Optional[BaseException] = None
    if rank == 0:
        try:
            _merge(out_dir, batches, settings, fingerprint, model_name, metrics, eps_grid, top_k, device, world,
                   report)
        except BaseException as error:      # the other ranks must not wait for a merge that failed
            merge_error = error
    if D.any_rank_failed(merge_error is not None):
        raise merge_error if merge_error is not None else RuntimeError("evaluate: rank 0 failed to merge")
    return json.loads((out_dir / RESULTS_FILE).read_text())


def _merge(out_dir, batches, settings, fingerprint, model_name, metrics, eps_grid, top_k, device, world,
           report) -> None:
    """Rank 0: reads every rank's records and writes results.json (and the report)."""
    records = read_records(out_dir, fingerprint=fingerprint, batches=batches, attacks=list(settings["attacks"]))
    missing = sorted(set(range(len(batches))) - {r["batch"] for r in records})
    if missing:
        raise RuntimeError(f"evaluate: batches {missing[:10]} have no records; run again with resume=True")
    results = summarize(records, settings["attacks"], num_classes=records[0]["num_classes"] if records else 0,
                        model_name=model_name, metrics=metrics, eps_grid=eps_grid, top_k=top_k)
    results.update(settings=settings, software=software_versions(), device=device_description(device, world))
    if (out_dir / CHECKS_FILE).exists():
        results["warnings"] = json.loads((out_dir / CHECKS_FILE).read_text())
    write_json(out_dir / RESULTS_FILE, results)
    if report:
        from robustkit.eval.report import write_report
        write_report(out_dir)


# ---- setup ----------------------------------------------------------------------------------------------

def _name_attacks(attacks) -> Dict[str, Attack]:
    if isinstance(attacks, Attack):
        attacks = [attacks]
    if isinstance(attacks, Mapping):
        named = dict(attacks)
    else:
        named = {}
        for atk in attacks:
            base = type(atk).__name__.lower()
            name, k = base, 2
            while name in named:
                name, k = f"{base}_{k}", k + 1
            named[name] = atk
    for name, atk in named.items():
        if not isinstance(atk, Attack):
            raise TypeError(f"evaluate: attacks[{name!r}] must be a robustkit Attack, got {type(atk).__name__}")
    return named


def _resolve_data(data: DataSpec):
    if isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            warnings.warn("evaluate: the DataLoader shuffles; evaluation runs in dataset order so that it can "
                          "resume and shard", stacklevel=3)
        return data.dataset, data.batch_size, data.num_workers, data.collate_fn
    if isinstance(data, Dataset):
        return data, None, 0, None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        images, labels = data
        if images.dim() == 0 or labels.dim() == 0 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"evaluate: data must be an (images, labels) pair of the same length, got "
                             f"{list(images.shape)} images and {list(labels.shape)} labels")
        return TensorDataset(images, labels), None, 0, None
    raise TypeError(f"evaluate: data must be a DataLoader, a Dataset or an (images, labels) pair of tensors, "
                    f"got {type(data).__name__}")


def _write_checks(out_dir, model, dataset, named, collate, device, level, training_modules, seed) -> None:
    """``check_model`` on the first 32 images (warned, and saved for results.json's ``warnings``). The model is
    already in eval mode here, so its training mode at the call is passed in and reported as found."""
    from robustkit.eval.checks import CheckWarning, check_model

    if len(dataset) == 0:
        return
    x, y = next(iter(_loader(dataset, [list(range(min(32, len(dataset))))], 0, collate)))
    budget = next((a for a in named.values() if hasattr(a, "eps") and getattr(a, "eps", 0) > 0), None)
    eps = budget.eps if level == "full" and budget is not None else None
    norm = getattr(budget, "norm", "linf") if budget is not None else "linf"
    found = []
    if training_modules:
        found.append(CheckWarning("train_mode", f"the model was in training mode ({len(training_modules)} "
                                                "modules); evaluate() evaluates it in eval mode"))
    generator = torch.Generator(device=device).manual_seed(seed)
    found += check_model(model, x.to(device), y.to(device), eps=eps, norm=norm if norm in ("linf", "l2") else "linf",
                         generator=generator, emit=False)
    for finding in found:
        warnings.warn(f"{finding.code}: {finding.message}", stacklevel=3)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / CHECKS_FILE, [f.as_dict() for f in found])


def _loader(dataset, batches, num_workers, collate):
    """The ``(images, labels)`` batches of ``batches`` (lists of dataset indices), each checked."""
    kwargs = {"collate_fn": collate} if collate is not None else {}
    for batch in DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, **kwargs):
        yield _check_batch(batch)


def _check_batch(batch):
    """A one-line error naming ``data`` unless a loaded batch is an (images tensor, integer labels [B]) pair."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"{len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise TypeError(f"evaluate: data must yield (image, label) pairs, got batches of {got}")
    x, y = batch
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"evaluate: data must yield (image tensor, integer label) pairs, got batches "
                        f"of ({type(x).__name__}, {type(y).__name__})")
    if x.dim() == 0 or y.shape != (x.shape[0],) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"evaluate: data labels must be integer classes, one per image, got "
                         f"{str(y.dtype).replace('torch.', '')} {list(y.shape)} labels for images {list(x.shape)}")
    return x, y


def _logits(who: str, model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)``, refused with a one-line error naming ``who`` unless it is ``[B, num_classes]`` logits."""
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0] or not out.is_floating_point():
        got = f"{str(out.dtype).replace('torch.', '')} {list(out.shape)}" if isinstance(out, Tensor) \
            else type(out).__name__
        raise ValueError(f"evaluate: {who} must return [B, num_classes] floating-point logits for images "
                         f"{list(x.shape)}, got {got}")
    return out


def _plan_run(out_dir, settings, resume, dataset, model, correct_for, only_correct, per_class, limit, batch_size,
              device, collate) -> dict:
    """Rank 0, holding the lock: checks the output directory against the settings and fixes the ordered image
    selection. Resuming needs run.json: records without it cannot be shown to belong to this run."""
    run_path = out_dir / RUN_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)      # left by a process that died mid-write; nobody else writes here
    if has_records(out_dir):
        if not resume:
            raise FileExistsError(f"out: {str(out_dir)!r} holds records of an earlier run; resume it "
                                  "(resume=True / --resume) or choose another directory")
        if not run_path.exists():
            raise ValueError(f"out: {str(out_dir)!r} holds batch records but no {RUN_FILE}, so they cannot be "
                             "shown to belong to this run; delete its records/ folder or choose another directory")
        previous = _read_run_file(run_path)
        current = json.loads(dumps(settings))      # as it would read back from run.json
        if previous["settings"] != current:
            differing = sorted(k for k in current if previous["settings"].get(k) != current[k])
            raise ValueError(f"out: {str(out_dir)!r} holds a run with other settings (differing: "
                             f"{', '.join(differing) or 'keys'}); use another directory")
        return {"selection": previous["selection"]}
    selection = _select(dataset, model, correct_for, only_correct, per_class, limit, batch_size, device, collate)
    for stale in (out_dir / RESULTS_FILE, out_dir / EXAMPLES_FILE):
        stale.unlink(missing_ok=True)
    write_json(run_path, {"settings": settings, "selection": selection})
    return {"selection": selection}


def _read_run_file(path: pathlib.Path) -> dict:
    remedy = "the run cannot be resumed; delete the directory's run.json and records/ or choose another directory"
    previous = read_json(path, "out", remedy)
    if (not isinstance(previous, dict) or not isinstance(previous.get("settings"), dict)
            or not isinstance(previous.get("selection"), list)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in previous["selection"])):
        raise ValueError(f"out: {path} is not a run file (needs settings and an index selection); {remedy}")
    return previous


@torch.no_grad()
def _select(dataset, model, correct_for, only_correct, per_class, limit, batch_size, device, collate) -> List[int]:
    """Indices of the images to evaluate, in dataset order: those passing the filters, up to ``limit``."""
    n = len(dataset)
    if not only_correct and per_class is None:
        return list(range(n if limit is None else min(n, limit)))
    judges = [("model", model), *((f"correct_for[{i}]", m) for i, m in enumerate(correct_for))] if only_correct \
        else []
    chunks = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    selection: List[int] = []
    counts: Dict[int, int] = {}
    for indices, (x, y) in zip(chunks, _loader(dataset, chunks, 0, collate)):
        x, y = x.to(device), y.to(device)
        keep = torch.ones_like(y, dtype=torch.bool)
        for who, judge in judges:
            keep &= _logits(who, judge, x).argmax(dim=1) == y
        for index, kept, label in zip(indices, keep.tolist(), y.tolist()):
            if not kept or (per_class is not None and counts.get(label, 0) >= per_class):
                continue
            counts[label] = counts.get(label, 0) + 1
            selection.append(index)
            if limit is not None and len(selection) >= limit:
                return selection
    return selection


# ---- the loop -------------------------------------------------------------------------------------------

def _run_batches(model, dataset, batches, todo, attacks, transfer_to, out_dir, rank, seed, device, collate,
                 num_workers, progress, examples, target, fingerprint, total, redo_examples=False) -> None:
    done_images = total - sum(len(batches[b]) for b in todo)
    bar = tqdm(total=total, initial=done_images, unit="img", disable=not progress, desc=f"eval {out_dir.name}",
               dynamic_ncols=True)
    # the running headline: the worst case over the fixed-budget attacks at the headline budget (minimal-norm
    # attacks always succeed, so counting them would show 0)
    headline = headline_budget({name: describe_attack(attack) for name, attack in attacks.items()})
    counted = headline["attacks"] if headline else []
    label = f"robust@{headline['eps']:g}" if headline else None
    robust, seen = 0, 0
    generators = module_generators([model, *transfer_to.values(), *(m for atk in attacks.values() for m in atk.models)])
    try:
        if redo_examples:
            (x, y), = _loader(dataset, [batches[0]], 0, collate)
            x, y = x.to(device), y.to(device)
            record, advs = _evaluate_batch(model, x, y, 0, attacks, transfer_to, seed, device, target, generators)
            with seeded(batch_seed(seed, 0, -2), device, generators):       # Grad-CAM's forwards
                _save_examples(out_dir, model, x[:examples], y[:examples], record, advs, examples)
        with RecordWriter(out_dir, rank) as writer:
            for b, (x, y) in zip(todo, _loader(dataset, [batches[b] for b in todo], num_workers, collate)):
                x, y = x.to(device), y.to(device)
                record, advs = _evaluate_batch(model, x, y, b, attacks, transfer_to, seed, device, target,
                                               generators)
                record["index"] = batches[b]
                record["fingerprint"] = fingerprint
                writer.write(record)
                if b == 0 and examples > 0:
                    with seeded(batch_seed(seed, 0, -2), device, generators):
                        _save_examples(out_dir, model, x[:examples], y[:examples], record, advs, examples)
                survived = torch.tensor(record["clean_pred"]) == torch.tensor(record["y"])
                for name in counted:
                    survived &= torch.tensor(record["attacks"][name]["pred"]) == torch.tensor(record["y"])
                robust, seen = robust + int(survived.sum()), seen + len(record["y"])
                if label is not None:
                    bar.set_postfix({label: f"{robust / seen:.3f}"}, refresh=False)
                bar.update(len(record["y"]))
    finally:
        bar.close()      # so that an error message starts on its own line


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def module_generators(models: Sequence[nn.Module]) -> List[torch.Generator]:
    """The ``torch.Generator`` attributes of every module of ``models`` (e.g. ``RandomResizePad(seed=...)``'s),
    each once, in module order: the randomness a model carries itself, which the runner reseeds per batch."""
    found: Dict[int, torch.Generator] = {}
    for model in models:
        for module in model.modules():
            for value in vars(module).values():
                if isinstance(value, torch.Generator):
                    found.setdefault(id(value), value)
    return list(found.values())


@contextlib.contextmanager
def seeded(seed: int, device: torch.device, generators: Sequence[torch.Generator] = ()) -> Iterator[None]:
    """Inside: torch's global generators (CPU, and ``device`` when CUDA) seeded with ``seed``, and each of
    ``generators`` with a seed derived from ``(seed, its position)``; every state is restored on exit. So the
    draws of a randomized model (a random input transform, dropout left on) inside are a function of ``seed``
    alone, not of how many batches ran before in this process."""
    saved = [g.get_state() for g in generators]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for position, generator in enumerate(generators):
                generator.manual_seed(batch_seed(seed, position, 0))
            yield
    finally:
        for generator, state in zip(generators, saved):
            generator.set_state(state)


def _run_attack(attack: Attack, x: Tensor, y: Tensor, target: Optional[str], seed: int, device: torch.device):
    """``attack.run`` with its randomness drawn from ``seed`` alone: a generator on ``device`` (the global
    generators and the models' own, for attacks and models that draw from them, are seeded by the caller)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return attack.run(x, y, target, generator=generator)


def _evaluate_batch(model, x, y, b, attacks, transfer_to, seed, device, target=None, generators=()):
    """Runs every attack on one batch; returns its JSON record and the adversarial images.

    Every draw is a function of ``(seed, b)``: the clean forwards run :func:`seeded` with
    ``batch_seed(seed, b, -1)``, attack ``a`` (and the forwards of its images) with ``batch_seed(seed, b, a)``;
    ``generators`` are the models' own (:func:`module_generators`)."""
    with torch.no_grad(), seeded(batch_seed(seed, b, -1), device, generators):
        logits = _logits("model", model, x)
        flat = x.flatten(1).double()
        record = {"batch": b, "y": y.tolist(), "clean_pred": logits.argmax(dim=1).tolist(),
                  "num_classes": int(logits.shape[1]),
                  "x_l2": flat.norm(dim=1).tolist(), "x_linf": flat.abs().amax(dim=1).tolist(),
                  "transfer_clean": {t: _logits(f"transfer_to[{t!r}]", m, x).argmax(dim=1).tolist()
                                     for t, m in transfer_to.items()},
                  "attacks": {}}
    advs = {}
    for a, (name, attack) in enumerate(attacks.items()):
        with seeded(batch_seed(seed, b, a), device, generators):
            _synchronize(device)
            start = time.perf_counter()
            result = _run_attack(attack, x, y, target, batch_seed(seed, b, a), device)
            _synchronize(device)
            seconds = time.perf_counter() - start
            own = attack.ensemble is model or (len(attack.models) == 1 and attack.models[0] is model)
            with torch.no_grad():
                adv_logits = result.logits if own else _logits("model", model, result.adv)
                transfer = {t: _logits(f"transfer_to[{t!r}]", m, result.adv).argmax(dim=1).tolist()
                            for t, m in transfer_to.items()}
        record["attacks"][name] = {
            "pred": adv_logits.argmax(dim=1).tolist(), "l2": result.l2.double().tolist(),
            "linf": result.linf.double().tolist(), "steps": result.steps.tolist(),
            "target": None if result.target is None else result.target.tolist(), "transfer": transfer,
            "seconds": seconds}
        advs[name] = result.adv
    return record, advs


def _save_examples(out_dir, model, x, y, record, advs, k) -> None:
    """The first ``k`` images of batch 0, clean and adversarial, with Grad-CAM maps, for the report."""
    cams_clean = grad_cam(model, x)
    payload = {"x": x.cpu(), "y": y.cpu(), "clean_pred": torch.tensor(record["clean_pred"][:k]),
               "adv": {}, "adv_pred": {}, "cam_clean": None if cams_clean is None else cams_clean.cpu(),
               "cam_adv": {}}
    for name, adv in advs.items():
        payload["adv"][name] = adv[:k].detach().cpu()
        payload["adv_pred"][name] = torch.tensor(record["attacks"][name]["pred"][:k])
        cams = grad_cam(model, adv[:k].detach())
        payload["cam_adv"][name] = None if cams is None else cams.cpu()
    write_atomic(out_dir / EXAMPLES_FILE, lambda tmp: torch.save(payload, tmp))
