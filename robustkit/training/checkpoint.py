"""Checkpoints of :func:`robustkit.training.fit`: one file per run folder, rewritten after every epoch.

A checkpoint holds everything the rest of the run depends on: the model, optimizer and scheduler states, every
RNG state the loop draws from (torch CPU and CUDA, Python's ``random``, NumPy's), the epoch count, the history so
far, the catastrophic-overfitting guard's state and the run's *signature* (its configuration), so that a
resumed run continues exactly where the killed one stopped and a folder holding another run is refused.
It contains only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import pathlib
import random
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def rng_state() -> Dict[str, Any]:
    """Every RNG state a training step may draw from, as weights_only-loadable values."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        # NumPy's state holds an ndarray, which weights_only refuses: store its key as a tensor
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), int(numpy_state[2]),
                  int(numpy_state[3]), float(numpy_state[4])],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, *rest = state["python"]
    random.setstate((version, tuple(rest[0]), rest[1]))
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))


def checkpoint_path(folder: os.PathLike) -> pathlib.Path:
    return pathlib.Path(folder) / CHECKPOINT_NAME


def save_checkpoint(folder: os.PathLike, state: Dict[str, Any]) -> pathlib.Path:
    """Write ``state`` to ``folder/checkpoint.pt`` atomically (write a temporary file, then rename), so a
    kill during the write leaves the previous checkpoint intact."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".checkpoint-", suffix=".tmp")
    os.close(handle)
    try:
        torch.save({"format": FORMAT_VERSION, **state}, temporary)
        os.replace(temporary, checkpoint_path(folder))
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return checkpoint_path(folder)


def load_checkpoint(folder: os.PathLike, map_location: Any = "cpu") -> Optional[Dict[str, Any]]:
    """The checkpoint in ``folder`` (loaded with ``weights_only=True``), or None when there is none."""
    path = checkpoint_path(folder)
    if not path.is_file():
        return None
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint_dir: {path} is not a robustkit fit checkpoint (format {FORMAT_VERSION})")
    return state


def signature_mismatch(saved: Dict[str, Any], current: Dict[str, Any]) -> list:
    """The configuration keys in which a saved run differs from the current one."""
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))


__all__ = ["CHECKPOINT_NAME", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint",
           "checkpoint_path", "signature_mismatch"]
