"""``robustkit reproduce <paper>``: one small module per seed paper re-runs its headline tables with the
library's public API and writes ours beside the paper's numbers.

    >>> from robustkit.reproduce import PAPERS, run_paper
    >>> list(PAPERS)
    ['self-distillation', 'retraining', 'distillation-cw', 'defendr', 'deep-defense']
    >>> out = run_paper("retraining", scale="quick", out="runs/retraining")   # tables.md, results.json, report.html

Each paper module (``robustkit/reproduce/<module>.py``) defines ``PAPER``, a :class:`~.protocol.Paper`. The
modules load on first use, one at a time, so a paper whose module is missing or needs an absent optional
dependency does not stop the others.
"""
from __future__ import annotations

import datetime
import importlib
import pathlib
import shlex
import sys
import time
from collections.abc import Mapping
from typing import Any, Dict, Iterator, Optional, Union

from robustkit.reproduce.protocol import SCALES, Cell, Context, Paper

#: CLI name -> module of robustkit.reproduce, in the order ``--list`` shows them
MODULES = {"self-distillation": "self_distillation", "retraining": "retraining",
           "distillation-cw": "distillation_cw", "defendr": "defendr", "deep-defense": "deep_defense"}
RUN_FILE = "run.json"


class PaperUnavailable(LookupError):
    """A registered paper whose module is not in this installation."""


class _Papers(Mapping):
    """name -> :class:`Paper`, importing each paper's module on first access."""

    def __init__(self, modules: Dict[str, str]):
        self._modules, self._loaded = dict(modules), {}

    def __getitem__(self, name: str) -> Paper:
        if name not in self._modules:
            raise KeyError(name)
        if name not in self._loaded:
            module_name = f"{__name__}.{self._modules[name]}"
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if error.name != module_name:     # the module exists but something it imports does not
                    raise
                raise PaperUnavailable(f"paper {name!r}: its module {module_name} is not in this installation") \
                    from None
            self._loaded[name] = module.PAPER
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


PAPERS: Mapping[str, Paper] = _Papers(MODULES)


def _run_identity(name: str, scale: str, seed: int, limit: Optional[dict]) -> dict:
    return {"paper": name, "scale": scale, "seed": seed, "limit": limit}


def _claim_out(out: pathlib.Path, identity: dict, resume: bool) -> None:
    """A fresh run needs an out folder without an earlier run; a resumed one needs the same settings."""
    from robustkit.eval.storage import read_json, write_json
    run_file = out / RUN_FILE
    if run_file.is_file():
        before = read_json(run_file, "out", "delete the folder or choose another --out")
        if not resume:
            raise ValueError(f"out: {str(out)!r} holds an earlier run of {before.get('paper')!r}; pass resume=True "
                             "(--resume) to continue it, or choose another folder")
        if before != identity:
            raise ValueError(f"out: {str(out)!r} holds a run with other settings ({before}); resume needs the same "
                             f"paper, scale, seed and limit ({identity})")
    out.mkdir(parents=True, exist_ok=True)
    write_json(run_file, identity)


def command_line() -> str:
    """This process's command, as typed: ``python -m robustkit ...`` rather than the path of __main__.py."""
    argv = list(sys.argv)
    if argv and pathlib.Path(argv[0]).name == "__main__.py" and pathlib.Path(argv[0]).parent.name == "robustkit":
        argv = ["-m", "robustkit"] + argv[1:]
    return shlex.join([pathlib.Path(sys.executable).name] + argv)


def run_paper(name: str, *, scale: str = "quick", out: Union[str, pathlib.Path], data_dir=None,
              device: Any = "cpu", seed: int = 0, resume: bool = False, progress: bool = True,
              limit: Optional[dict] = None) -> pathlib.Path:
    """Runs paper ``name``'s protocol into ``out``; writes ``tables.md``, ``results.json`` and ``report.html``
    there, prints the tables and returns ``out``.

    Args:
        scale: ``"quick"`` (minutes on a 2-core CPU) or ``"full"`` (the paper's documented protocol).
        data_dir: a folder holding ``cifar10/`` and ``imagenet-sample/`` where the tables use them; None:
            the bundled MNIST only (tables that need other data say what they substitute).
        resume: continue a run killed in ``out``: finished steps are read back, training and evaluations
            continue from their checkpoints and records. Without it an ``out`` holding a run is refused.
        limit: overrides merged over the scale's settings (CI: ``{"train_images": 300, "epochs": 1}``).
    """
    import torch
    if name not in PAPERS:
        raise ValueError(f"paper must be one of {', '.join(PAPERS)}, got {name!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    paper = PAPERS[name]
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file, not a directory")
    if data_dir is not None and not pathlib.Path(data_dir).is_dir():
        raise ValueError(f"data_dir: {str(data_dir)!r} is not a directory")
    limit = dict(limit) if limit else None
    _claim_out(out, _run_identity(name, scale, seed, limit), resume)
    ctx = Context(paper, scale=scale, out=out, data_dir=data_dir, device=torch.device(device), seed=seed,
                  resume=resume, progress=progress, limit=limit)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    paper.run(ctx)
    from robustkit.reproduce.writers import write_all
    command = command_line()
    markdown = write_all(ctx, command=command, wall_seconds=time.perf_counter() - start, started=started)
    print(markdown, flush=True)
    return out


__all__ = ["PAPERS", "MODULES", "run_paper", "Paper", "Cell", "Context", "PaperUnavailable"]
