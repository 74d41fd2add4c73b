"""What a paper module is written against: :class:`Paper` (its name, tables and ``run``), :class:`Cell` (one
number of a table, the paper's beside ours) and :class:`Context` (scale settings, cached models, memoised
steps, resumable evaluations, and the cells, notes and plots the writers turn into ``tables.md``,
``results.json`` and ``report.html``).

A paper module::

    def run(ctx: Context) -> None:
        s = ctx.scale_settings(quick=dict(images=100), full=dict(images=1000))
        model = ctx.model("lenet", recipe={"epochs": 1, "seed": 0}, build=LeNet, train=my_training)
        value = ctx.step("accuracy", lambda: {"accuracy": measure(model, s.images)})
        ctx.cell("Table 1", row="LeNet", column="accuracy", paper=0.99, ours=value["accuracy"])

    PAPER = Paper(name="my-paper", title="...", tables={"Table 1": "clean accuracy"}, run=run)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import types
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from robustkit._version import __version__
from robustkit.eval.runner import derived_seed
from robustkit.eval.storage import dumps, read_json, write_json
from robustkit.zoo import cached_model, default_cache_dir

SCALES = ("quick", "full")


@dataclasses.dataclass(frozen=True)
class Paper:
    """One reproducible paper: ``name`` (the CLI name), ``title`` (authors, venue), ``tables`` (table or figure
    name -> what it shows, in report order) and ``run(ctx)``, the protocol."""
    name: str
    title: str
    tables: Dict[str, str]
    run: Callable[["Context"], None]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One number of a table: the paper's value (None where the paper has none for our setting) and ours
    (None when it could not be measured), printed with ``fmt``."""
    table: str
    row: str
    column: str
    paper: Optional[float]
    ours: Optional[float]
    fmt: str = ".3f"
    note: str = ""

    @property
    def difference(self) -> Optional[float]:
        """ours - paper, or None when either is missing."""
        if self.paper is None or self.ours is None:
            return None
        return self.ours - self.paper


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a figure: ``y`` against ``x``."""
    figure: str
    name: str
    x: List[float]
    y: List[float]
    xlabel: str
    ylabel: str


@dataclasses.dataclass(frozen=True)
class Heatmap:
    """A matrix figure (``values[i][j]`` for ``rows[i]``, ``cols[j]``), e.g. a transfer matrix."""
    figure: str
    rows: List[str]
    cols: List[str]
    values: List[List[float]]
    label: str


@dataclasses.dataclass(frozen=True)
class Bars:
    """A grouped bar chart: one bar per ``labels[i]`` for each group (``groups[name][i]``; NaN leaves a gap),
    e.g. rho_2 per model, ours beside the paper's."""
    figure: str
    labels: List[str]
    groups: Dict[str, List[float]]
    ylabel: str


def _number(value: Any, who: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
            isinstance(value, torch.Tensor) and value.numel() == 1):
        raise TypeError(f"{who} must be a number or None, got {type(value).__name__}")
    return float(value)


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists, NaN as None), so that a step returns the same
    thing whether it ran now or was read from its file on resume."""
    return json.loads(dumps(value))


def recipe_key(name: str, recipe: Mapping[str, Any], seed: int) -> str:
    """The cache key of a model: SHA-256 over (name, recipe, initialisation seed, robustkit version)."""
    text = json.dumps({"name": name, "recipe": recipe, "seed": seed, "robustkit": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def step_seed(seed: int, name: str) -> int:
    """The torch seed of step ``name``: a function of the run's seed and the step's name only."""
    return derived_seed(seed, name)


class Context:
    """Everything a paper's ``run`` gets: the run's settings and the recording API.

    Attributes: ``paper``, ``scale`` ("quick" | "full"), ``out`` (the run directory), ``data_dir`` (a folder
    holding ``cifar10/``, ``imagenet-sample/``, ... or None for the bundled MNIST only), ``device``,
    ``seed``, ``resume``, ``progress``, ``limit`` (CI overrides merged over the scale's settings).
    """

    def __init__(self, paper: Paper, *, scale: str = "quick", out: pathlib.Path,
                 data_dir: Optional[pathlib.Path] = None, device: torch.device = torch.device("cpu"),
                 seed: int = 0, resume: bool = False, progress: bool = True, limit: Optional[Mapping[str, Any]] = None):
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.paper, self.scale, self.out = paper, scale, pathlib.Path(out)
        self.data_dir = pathlib.Path(data_dir) if data_dir is not None else None
        self.device, self.seed, self.resume, self.progress = torch.device(device), seed, resume, progress
        self.limit = dict(limit) if limit else None
        self.cells: List[Cell] = []
        self.notes: Dict[str, List[str]] = {}
        self.series_list: List[Series] = []
        self.heatmaps: List[Heatmap] = []
        self.bar_charts: List[Bars] = []
        self.settings: Dict[str, Any] = {}
        self.steps_run: List[str] = []      # steps computed in this process (the others were read back)
        self._settings_calls: List[dict] = []
        self._stored_settings: Optional[List[dict]] = None

    # ---- settings --------------------------------------------------------------------------------------
    def scale_settings(self, quick: Mapping[str, Any], full: Mapping[str, Any]) -> types.SimpleNamespace:
        """The settings of the chosen scale with the CI ``limit`` applied to the keys they have (a limit key
        the settings lack is ignored); recorded in ``tables.md`` and ``results.json``."""
        chosen = dict(quick if self.scale == "quick" else full)
        for key, value in (self.limit or {}).items():
            if key in chosen:
                chosen[key] = value
        self._check_settings(chosen)
        self.settings.update(chosen)
        return types.SimpleNamespace(**chosen)

    def _check_settings(self, chosen: Dict[str, Any]) -> None:
        """Memoised steps are only valid for the settings that made them: a resume whose code now asks for
        other settings is refused instead of mixing old and new numbers. ``out/settings.json`` keeps one
        entry per ``scale_settings`` call, in call order, so a paper may call it more than once."""
        path = self.out / "settings.json"
        if self._stored_settings is None:
            stored = read_json(path, "out", "start a fresh --out") if path.is_file() else []
            self._stored_settings = stored if isinstance(stored, list) else [stored]
        index, plain = len(self._settings_calls), _plain(chosen)
        before = self._stored_settings[index] if index < len(self._stored_settings) else {}
        changed = {k: (before[k], v) for k, v in plain.items() if k in before and before[k] != v}
        if changed and self.resume:
            raise ValueError(f"out: the run in {str(self.out)!r} was made with other settings "
                             f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}); "
                             "start a fresh --out")
        self._settings_calls.append(plain)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(path, self._settings_calls)

    # ---- models ----------------------------------------------------------------------------------------
    def model(self, name: str, recipe: Mapping[str, Any], build: Callable[[], nn.Module],
              train: Callable[[nn.Module, pathlib.Path], None]) -> nn.Module:
        """The model ``build()`` trained by ``train(model, ckpt_dir)``, cached under
        ``$ROBUSTKIT_CACHE/reproduce/`` by (name, recipe, seed, robustkit version): a second run, or another
        paper with the same recipe, loads it. ``build`` runs under ``torch.manual_seed(recipe["seed"])``
        (``ctx.seed`` when the recipe has none), so the initial weights are part of the key. ``ckpt_dir``
        lies in ``out/checkpoints/`` so a killed training resumes through ``fit``'s checkpoints. Returned in
        eval mode on ``ctx.device``; the state dict is saved and loaded with ``weights_only=True``."""
        seed = int(recipe.get("seed", self.seed))
        try:
            key = recipe_key(name, recipe, seed)
        except TypeError as error:
            raise TypeError(f"model {name!r}: recipe must be JSON-able ({error})") from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
        path = default_cache_dir() / "reproduce" / f"{name}-{key}.pt"
        ckpt_dir = self.out / "checkpoints" / f"{name}-{key}"

        def run_training(fresh: nn.Module) -> nn.Module:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_json(ckpt_dir / "recipe.json", {"name": name, "recipe": dict(recipe), "seed": seed})
            fresh.to(self.device).train()
            self._say(f"training {name} ({path.name})")
            train(fresh, ckpt_dir)
            return fresh

        return cached_model(model, path, run_training, self.device)

    # ---- memoised measurements -------------------------------------------------------------------------
    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``'s JSON-able result, memoised in ``out/steps/<name>.json``: with resume on, a step whose
        file exists is read back instead of run. Returned as JSON reads it back either way.

        ``fn`` runs with torch's random state seeded from ``(ctx.seed, name)`` alone (and the caller's state
        restored afterwards), so a step computes the same whether the steps before it ran in this process or
        were read back on resume."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"step name must be a plain file name, got {name!r}")
        path = self.out / "steps" / f"{name}.json"
        if self.resume and path.is_file():
            return read_json(path, f"step {name!r}", "delete it to recompute the step")["value"]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(step_seed(self.seed, name))
            value = fn()
        try:
            value = _plain(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"step {name!r}: fn must return a JSON-able value ({error})") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"step": name, "value": value})
        self.steps_run.append(name)
        return value

    def evaluate(self, name: str, model: nn.Module, attacks, x: torch.Tensor, y: torch.Tensor, **kw) -> dict:
        """:func:`robustkit.eval.evaluate` of ``model`` against ``attacks`` on ``(x, y)`` into
        ``out/evals/<name>`` (resumable batch by batch), with the run's seed, device and progress unless
        ``kw`` says otherwise; ``report=False`` by default (the paper's report has its own plots). Returns the
        results object: ``results["attacks"][attack]["metrics"]`` holds robust accuracy, success and norms."""
        from robustkit.eval import evaluate
        if not name or "/" in name:
            raise ValueError(f"evaluation name must be a plain folder name, got {name!r}")
        options = {"seed": self.seed, "device": self.device, "progress": self.progress, "report": False, **kw}
        return evaluate(model, (x, y), attacks, out=self.out / "evals" / name, resume=True, **options)

    # ---- what the writers report -----------------------------------------------------------------------
    def cell(self, table: str, *, row: str, column: str, paper: Optional[float], ours: Optional[float],
             fmt: str = ".3f", note: str = "") -> Cell:
        """Records one number of ``table`` (a key of the paper's ``tables``)."""
        if table not in self.paper.tables:
            raise ValueError(f"cell: table must be one of {list(self.paper.tables)}, got {table!r}")
        format(0.0, fmt)   # a bad format fails here, not in the writer
        if any((c.table, c.row, c.column) == (table, row, column) for c in self.cells):
            raise ValueError(f"cell: {table} / {row} / {column} was already recorded")
        cell = Cell(table, str(row), str(column), _number(paper, "paper"), _number(ours, "ours"), fmt, note)
        self.cells.append(cell)
        return cell

    def note(self, table: str, text: str) -> None:
        """A remark printed under ``table`` (a substitution, a caveat, where the paper's number came from)."""
        self.notes.setdefault(table, []).append(text)

    def series(self, figure: str, *, name: str, x: Sequence[float], y: Sequence[float], xlabel: str,
               ylabel: str) -> None:
        """One line of the plot ``figure`` in the report (and a table of its points in tables.md)."""
        if len(x) != len(y):
            raise ValueError(f"series {figure}/{name}: x and y must have the same length, got {len(x)} and {len(y)}")
        self.series_list.append(Series(figure, name, [float(v) for v in x],
                                       [math.nan if v is None else float(v) for v in y], xlabel, ylabel))

    def heatmap(self, figure: str, *, rows: Sequence[str], cols: Sequence[str],
                values: Sequence[Sequence[float]], label: str) -> None:
        """A matrix plot (``values[i][j]`` for ``rows[i]`` x ``cols[j]``) in the report and tables.md."""
        if len(values) != len(rows) or any(len(r) != len(cols) for r in values):
            raise ValueError(f"heatmap {figure}: values must be {len(rows)} rows of {len(cols)}")
        self.heatmaps.append(Heatmap(figure, [str(r) for r in rows], [str(c) for c in cols],
                                     [[float(v) for v in r] for r in values], label))

    def bars(self, figure: str, *, labels: Sequence[str], groups: Dict[str, Sequence[Optional[float]]],
             ylabel: str) -> None:
        """A grouped bar chart in the report (and a table of its values in tables.md); ``None`` is a gap."""
        if not groups or any(len(values) != len(labels) for values in groups.values()):
            raise ValueError(f"bars {figure!r}: every group needs one value per label ({len(labels)})")
        self.bar_charts.append(Bars(figure, [str(label) for label in labels],
                                    {str(name): [math.nan if v is None else float(v) for v in values]
                                     for name, values in groups.items()}, ylabel))

    def _say(self, text: str) -> None:
        if self.progress:
            print(f"[{self.paper.name}] {text}", flush=True)


__all__ = ["Paper", "Cell", "Context", "Series", "Heatmap", "SCALES", "recipe_key", "step_seed"]
