"""The plumbing every script in ``bench/`` shares: checks before timing, interleaved timing, paired ratios,
machine labels and the one result writer.

A benchmark script checks that the methods agree, times them in the same run and writes one result file:

    import harness
    from data import correctly_classified, mnist_lenet

    model = mnist_lenet()
    x, y = correctly_classified(model, 256)
    ours = rk.attacks.PGD(model, eps=0.3, step_size=0.01, steps=40, random_start=False)
    theirs = torchattacks.PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=False)
    check = harness.check_close("PGD vs torchattacks", ours(x, y), theirs(x, y), atol=1e-6)  # exits 1 if not
    t = harness.timeit({"robustkit": lambda: ours(x, y), "torchattacks": lambda: theirs(x, y),
                        "floor": lambda: [harness.floor_step(model, x) for _ in range(40)]},
                       rounds=5, clock="cpu")
    print(t.paired_ratios("torchattacks"))   # {method: median over rounds of t_torchattacks / t_method}
    harness.Result("attacks", rows=[{"attack": "PGD", "check": check, **t.to_json(("torchattacks", "floor"))}],
                   notes={"images": len(x)}).write()   # -> bench/results/<machine_label()>/attacks.json

Scripts run as ``python bench/<name>.py``, so ``bench/`` is on ``sys.path`` and ``import harness`` and
``import data`` find these modules. Scripts never import one another.

Why not ``torch.utils.benchmark.Timer`` for everything: ``Timer.timeit`` warms up twice inside every call
and times one statement at a time, so it can neither interleave methods round by round nor afford attack
calls that take seconds. :func:`autorange` uses it for what it fits, a single microsecond-scale call
(adaptive repeat count, CUDA synchronisation); :func:`timeit` is the rotating-rounds loop for comparisons.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch

BENCH = pathlib.Path(__file__).resolve().parent
RESULTS = BENCH / "results"
LABEL_ENV = "ROBUSTKIT_BENCH_LABEL"
CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


# ---- the machine -------------------------------------------------------------------------------------------
def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_label(device: Union[str, torch.device, None] = "cpu") -> str:
    """The folder under ``bench/results/``: ``$ROBUSTKIT_BENCH_LABEL`` when set; for a CUDA device the GPU's
    name (``nvidia-h100-80gb-hbm3``); else ``cpu-<cores>core``."""
    override = os.environ.get(LABEL_ENV)
    if override:
        return override
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")
    return f"cpu-{cpu_cores()}core"


def sync(device: Union[str, torch.device, None]) -> None:
    """Wait for the device's queued work, so that a clock read after it counts that work."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _git_commit() -> Optional[str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=BENCH,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def environment(device: Union[str, torch.device, None] = "cpu") -> Dict[str, object]:
    """What a result depends on besides the code: versions, threads, the machine, its load, the date."""
    try:
        import robustkit
        version, build = robustkit.__version__, robustkit.build_info() if hasattr(robustkit, "build_info") else None
    except Exception as error:  # an unbuilt tree: say so instead of failing to write the result
        version, build = None, f"import failed: {error}"
    try:
        from robustkit.eval.describe import cpu_name
        cpu = cpu_name() or platform.processor() or platform.machine()
    except ImportError:
        cpu = platform.processor() or platform.machine()
    cuda = torch.cuda.is_available()
    return {
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
        "machine_label": machine_label(device),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "robustkit": version,
        "robustkit_build": build if isinstance(build, (str, type(None))) else str(build),
        "git_commit": _git_commit(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "cpu": cpu,
        "cpu_cores": cpu_cores(),
        "platform": platform.platform(),
        "cuda_device": torch.cuda.get_device_name() if cuda else None,
        "cuda_runtime": torch.version.cuda if cuda else None,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# ---- command line and threads ---------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, *, threads: Optional[int] = 1, clock: str = "cpu") -> None:
    """``--threads``, ``--clock`` and ``--label``, with the same meaning in every script."""
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"intra-op threads (default {threads or 'torch default'}; on a shared machine, "
                             "1 thread and the cpu clock measure the work rather than the contention)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default=clock,
                        help="cpu: this process's CPU time (all threads summed); wall: elapsed time")
    parser.add_argument("--label", default=None,
                        help=f"results folder under bench/results/ (default: ${LABEL_ENV}, else the machine's label)")


def apply_arguments(args: argparse.Namespace, device: Union[str, torch.device, None] = "cpu") -> None:
    """Sets the thread count and the label override; refuses the cpu clock on a GPU."""
    if args.label:
        os.environ[LABEL_ENV] = args.label
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and device is not None and torch.device(device).type == "cuda":
        raise SystemExit("--clock cpu measures this process's CPU time, not the GPU's: use --clock wall")
    if args.clock == "cpu" and torch.get_num_threads() > 1:
        print(f"note: --clock cpu with {torch.get_num_threads()} threads sums their CPU time (work, not latency)",
              file=sys.stderr)


def parse_arguments(parser: argparse.ArgumentParser, *, threads: Optional[int] = 1,
                    clock: str = "cpu") -> argparse.Namespace:
    """:func:`add_arguments`, ``parser.parse_args()`` and :func:`apply_arguments` (CPU): a script's whole
    argument handling when it needs no device-specific step in between."""
    add_arguments(parser, threads=threads, clock=clock)
    args = parser.parse_args()
    apply_arguments(args)
    return args


def reproduce_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every ``robustkit reproduce`` timing script shares: ``--scale``, ``--seed``, ``--out`` and
    ``--tiny``; the script adds its paper's size options, then calls :func:`parse_arguments`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", choices=("quick", "full"), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run directory (default: a fresh temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="checks the script on a tiny setting")
    return parser


def time_reproduce(paper: str, args: argparse.Namespace, limit: dict, *, data_dir: Optional[str] = None) -> dict:
    """Runs ``robustkit reproduce <paper>`` with ``limit`` overrides, clocks it (wall and process CPU seconds)
    and files every cell as ``reproduce_<paper>[-tiny].json``; returns the run's results.json."""
    import tempfile

    from robustkit.reproduce import run_paper
    out = args.out or tempfile.mkdtemp(prefix=f"reproduce-{paper}-")
    wall, cpu = time.perf_counter(), time.process_time()
    run_paper(paper, scale=args.scale, out=out, data_dir=data_dir, seed=args.seed, limit=limit or None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results = json.loads((pathlib.Path(out) / "results.json").read_text())
    print(f"{wall:.0f} s wall, {cpu:.0f} s CPU; tables in {out}/tables.md")
    Result(f"reproduce_{paper.replace('-', '_')}" + ("-tiny" if args.tiny else ""), rows=results["cells"],
           notes={"scale": args.scale, "limit": limit, "settings": results["settings"], "out": out,
                  "data": data_dir, "wall_seconds": wall, "cpu_seconds": cpu,
                  "series": results.get("series")}).write()
    return results


# ---- checks before timing -----------------------------------------------------------------------------------
def fail(message: str) -> None:
    """Stops the benchmark with exit status 1: nothing is timed or written after a failed check."""
    raise SystemExit(f"correctness check failed: {message}")


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def compare(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> Dict[str, float]:
    """How far two batches are apart: the largest difference, the fraction of elements above ``tol`` and
    the fraction of samples (dim 0) equal to within ``tol``. Reports only; :func:`check_close` enforces."""
    a, b = torch.as_tensor(a).detach().cpu(), torch.as_tensor(b).detach().cpu()
    diff = (a.double() - b.double()).abs()
    if diff.numel() == 0:
        return {"max_abs_diff": 0.0, f"frac_elements_over_{tol:g}": 0.0, "frac_samples_equal": 1.0}
    same = (diff.reshape(diff.shape[0], -1) <= tol).all(1) if diff.dim() else diff <= tol
    return {"max_abs_diff": diff.max().item(), f"frac_elements_over_{tol:g}": (diff > tol).double().mean().item(),
            "frac_samples_equal": same.double().mean().item()}


def check_close(name: str, actual, expected, *, atol: float = 0.0, rtol: float = 0.0,
                min_fraction: float = 1.0) -> Dict[str, float]:
    """Exits (status 1, naming ``name``) unless ``|actual - expected| <= atol + rtol |expected|`` holds for at
    least ``min_fraction`` of the samples (all of them by default), NaNs in the same places. Returns the
    :func:`compare` statistics for the result file."""
    actual, expected = torch.as_tensor(actual).detach().cpu(), torch.as_tensor(expected).detach().cpu()
    if actual.shape != expected.shape:
        fail(f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    a, e = actual.double(), expected.double()
    close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    per_sample = close.reshape(close.shape[0], -1).all(1) if close.dim() else close.reshape(1)
    fraction = per_sample.double().mean().item() if per_sample.numel() else 1.0
    stats = {**compare(actual, expected, tol=max(atol, 1e-12)), "frac_samples_close": fraction,
             "atol": atol, "rtol": rtol}
    if fraction < min_fraction:
        fail(f"{name}: {fraction:.1%} of samples within atol={atol:g} rtol={rtol:g} (needs {min_fraction:.1%}); "
             f"max |diff| {stats['max_abs_diff']:.3g}")
    return stats


def check_at_least(name: str, value: float, minimum: float) -> float:
    """Exits unless ``value >= minimum`` (a success rate, an agreement fraction); returns ``value``."""
    if not value >= minimum:
        fail(f"{name} is {value:.4g}, needs >= {minimum:.4g}")
    return value


# ---- timing -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Timings:
    """Seconds per call of each method in each round, on both clocks; ``clock`` names the one that counts."""

    clock: str
    wall: Dict[str, List[float]]
    cpu: Dict[str, List[float]]

    @property
    def rounds(self) -> Dict[str, List[float]]:
        return self.wall if self.clock == "wall" else self.cpu

    def median(self, clock: Optional[str] = None) -> Dict[str, float]:
        samples = self.rounds if clock is None else getattr(self, clock)
        return {name: statistics.median(s) for name, s in samples.items()}

    def minimum(self, clock: Optional[str] = None) -> Dict[str, float]:
        """The fastest round per method: for short calls on a shared machine, noise only adds time."""
        samples = self.rounds if clock is None else getattr(self, clock)
        return {name: min(s) for name, s in samples.items()}

    def paired_ratios(self, reference: str, per: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
        return paired_ratios(self.rounds, reference, per)

    def to_json(self, references: Iterable[str] = (), per: Optional[Mapping[str, float]] = None) -> dict:
        """``seconds`` (medians, chosen clock), ``wall_seconds``, the per-round samples and, for each of
        ``references`` that was timed, ``paired_ratios["vs <ref>"]``."""
        refs = [r for r in references if r in self.rounds]
        return {"clock": self.clock, "seconds": self.median(), "wall_seconds": self.median("wall"),
                "rounds": self.rounds,
                "paired_ratios": {f"vs {ref}": self.paired_ratios(ref, per) for ref in refs}}


def paired_ratios(rounds: Mapping[str, Sequence[float]], reference: str,
                  per: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
    """``{method: median over rounds of t_reference / t_method}``. Each ratio compares two calls of the same
    round, made seconds apart, so a slow spell of a shared machine cancels instead of landing on whichever
    method it hit (the ratio of two medians does not cancel it). ``per`` (e.g. images per call) turns the
    ratio of times into a ratio of rates when methods do different amounts of work. A method timed in fewer
    rounds is paired with the reference's first rounds."""
    per = per or {}
    ref = rounds[reference]
    ref_per = per.get(reference, 1.0)
    return {name: statistics.median((r / ref_per) / (t / per.get(name, 1.0)) for r, t in zip(ref, times))
            for name, times in rounds.items()}


def timeit(fns: Mapping[str, Callable[[], object]], *, rounds: int = 5, warmup: int = 1, clock: str = "wall",
           device: Union[str, torch.device, None] = None, order: str = "rotate", number: int = 1,
           once: Iterable[str] = (), progress: bool = False) -> Timings:
    """Times each callable ``number`` times per round for ``rounds`` rounds, after ``warmup`` calls each.

    ``order="rotate"`` shifts the starting method by one every round, so that no method always follows
    the same neighbour (its caches, its allocator state) and a drift in the machine's load spreads over
    all methods; ``"fixed"`` keeps the dict's order. Every sample records both the wall clock and this
    process's CPU time; ``clock`` picks the one :meth:`Timings.paired_ratios` and :meth:`Timings.median`
    use. With ``device`` CUDA (or any CUDA context initialised when ``device`` is None) the device is
    synchronised before and after each sample. Methods named in ``once`` (peers too slow to repeat) run in
    the first round only."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    if order not in ("rotate", "fixed"):
        raise ValueError(f"order must be 'rotate' or 'fixed', got {order!r}")
    if rounds < 1 or number < 1 or warmup < 0:
        raise ValueError(f"rounds and number must be >= 1 and warmup >= 0, got {rounds}, {number}, {warmup}")
    once = set(once)
    unknown = once - set(fns)
    if unknown:
        raise ValueError(f"once names methods that are not timed: {sorted(unknown)}")
    if device is None and torch.cuda.is_available() and torch.cuda.is_initialized():
        device = "cuda"
    if clock == "cpu" and device is not None and torch.device(device).type == "cuda":
        raise ValueError("clock='cpu' measures this process's CPU time, not the GPU's: use clock='wall'")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync(device)
    wall: Dict[str, List[float]] = {name: [] for name in names}
    cpu: Dict[str, List[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names) if order == "rotate" else 0
        for name in names[shift:] + names[:shift]:
            if name in once and index > 0:
                continue
            fn = fns[name]
            sync(device)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(number):
                fn()
            sync(device)
            cpu[name].append((time.process_time() - start_cpu) / number)
            wall[name].append((time.perf_counter() - start_wall) / number)
        if progress:
            print(f"  round {index + 1}/{rounds}", file=sys.stderr, flush=True)
    return Timings(clock=clock, wall=wall, cpu=cpu)


def autorange(fn: Callable[[], object], *, min_run_time: float = 0.2) -> float:
    """Median seconds per call of a short ``fn``, by ``torch.utils.benchmark.Timer.blocked_autorange``
    (it picks the calls per block and synchronises CUDA), at the current thread count."""
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def floor_step(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One forward pass and the input gradient: what any gradient attack must pay per step (the model-only
    floor that attack times are compared with)."""
    x_var = x.detach().requires_grad_(True)
    out = model(x_var)
    (grad,) = torch.autograd.grad(out, x_var, grad_outputs=torch.ones_like(out))
    return grad


def keep_freed_memory() -> bool:
    """glibc: serve large blocks from the heap and never trim it (``mallopt``), for every method alike.

    PyTorch's CPU allocator returns each activation buffer to malloc; with glibc's defaults multi-MB blocks
    go back to the kernel and come back as fresh zeroed pages (on a 256-image LeNet step: ~5,000 page faults,
    30% of the step's CPU time, measured on a 2-core VM), and how many depends on the order of allocations.
    Keeping freed memory removes that noise from the ratios. False where there is no glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


# ---- results ------------------------------------------------------------------------------------------------
def _jsonable(value):
    """Tensors and numpy values to plain Python; NaN and infinities to ``null`` (strict JSON)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return _jsonable(value.item() if value.dim() == 0 else value.tolist())
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "shape", None) == ():
        value = value.item()  # numpy scalars
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, pathlib.Path):
        return str(value)
    return value


@dataclasses.dataclass
class Result:
    """One benchmark's output: ``rows`` (a list of dicts, or a dict of named tables), ``notes`` (settings and
    findings that are not rows) and the device the rows were measured on (it picks the machine label).
    Non-finite floats are written as ``null``."""

    name: str
    rows: Union[List[dict], Dict[str, object]]
    notes: Dict[str, object] = dataclasses.field(default_factory=dict)
    device: Union[str, torch.device, None] = "cpu"

    def path(self) -> pathlib.Path:
        return RESULTS / machine_label(self.device) / f"{self.name}.json"

    def write(self) -> pathlib.Path:
        """Writes ``bench/results/<machine_label(device)>/<name>.json`` (atomically) and prints its path."""
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        env = environment(self.device)
        payload = {"name": self.name, "command": env["command"], "environment": env, "notes": self.notes,
                   "rows": self.rows}
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
        os.replace(temporary, path)
        print(f"wrote {path.relative_to(BENCH.parent) if path.is_relative_to(BENCH.parent) else path}")
        return path


# ---- printing -----------------------------------------------------------------------------------------------
def print_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> None:
    """A plain aligned table of ``rows``' ``columns``."""
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns} if rows else {}
    print("  ".join(c.ljust(widths.get(c, len(c))) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


def quiet_peer_warnings() -> None:
    """The peers' deprecation and user warnings (foolbox, ART) would bury the tables."""
    warnings.filterwarnings("ignore", category=UserWarning, module="foolbox")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
