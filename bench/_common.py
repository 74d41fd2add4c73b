"""Shared benchmark plumbing: machine labels, timing with warm-up and medians, JSON results."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch


def machine_label(device: str) -> str:
    """``bench/results/<label>/``: the GPU's name on CUDA, e.g. ``nvidia-h100-80gb-hbm3``; ``cpu-<n>core`` else."""
    if device == "cuda":
        return torch.cuda.get_device_name().lower().replace(" ", "-")
    return f"cpu-{os.cpu_count()}core"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str, *, warmup: int = 3, repeats: int = 15) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs, synchronising the device."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def environment() -> Dict[str, object]:
    import robustkit

    return {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "robustkit": robustkit.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(name: str, device: str, payload: Dict[str, object]) -> str:
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", machine_label(device))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"environment": environment(), **payload}, f, indent=2)
    return path


def print_table(rows: List[Dict[str, object]], columns: List[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)
