"""The transfer matrix over several sources: one :func:`robustkit.eval.evaluate` run per source (a model
or an ensemble), each evaluating its adversarial images on every target, gathered into
``DIR/transfer.json``, ``DIR/transfer.csv`` and ``DIR/transfer.png`` (the self-distillation seed's tables)."""
from __future__ import annotations

import csv
import pathlib
import re
from typing import Callable, Dict, List, Mapping

from torch import nn

from robustkit.attacks.base import Attack
from robustkit.eval.runner import evaluate
from robustkit.eval.storage import write_json


def _folder_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", spec)


def run_transfer(sources: Mapping[str, nn.Module], targets: Mapping[str, nn.Module], data,
                 make_attack: Callable[[nn.Module], Attack], *, out, only_correct: bool = False,
                 **evaluate_kwargs) -> dict:
    """Runs ``make_attack(source)`` on each source (a model or a :class:`robustkit.nn.Ensemble`) and returns ``{"sources", "targets", "matrix"}``
    of success rates (over the images each target classifies correctly; with ``only_correct`` the images
    are those every source and target classifies correctly, as in the self-distillation seed).

    ``evaluate_kwargs`` go to :func:`evaluate` (limit, batch_size, device, resume, seed, per_class, target)."""
    out = pathlib.Path(out)
    every_model: List[nn.Module] = [*sources.values(), *targets.values()]
    rows: List[List[float]] = []
    runs: Dict[str, str] = {}
    attack_meta = None
    for name, source in sources.items():
        attack = make_attack(source)
        folder = out / _folder_name(name)
        results = evaluate(source, data, {"attack": attack}, out=folder, transfer_to=dict(targets),
                           only_correct=only_correct, correct_for=[m for m in every_model if m is not source],
                           model_name=name, metrics=("transfer",), report=False, examples=0, **evaluate_kwargs)
        entry = results["attacks"]["attack"]
        attack_meta = entry["attack"]
        rows.append([entry["transfer"][t] for t in targets])
        runs[name] = str(folder)
    matrix = {"sources": list(sources), "targets": list(targets), "matrix": rows, "attack": attack_meta,
              "runs": runs, "rate": "attack success among the images each target classifies correctly"}
    from robustkit.eval.distributed import rank_and_world
    if rank_and_world()[0] == 0:
        write_json(out / "transfer.json", matrix)
        with open(out / "transfer.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["source"] + list(targets))
            writer.writerows([[s] + r for s, r in zip(sources, rows)])
        from robustkit.eval.plots import transfer_heatmap
        png = transfer_heatmap({"transfer": matrix})
        if png is not None:
            (out / "transfer.png").write_bytes(png)
    return matrix


__all__ = ["run_transfer"]
