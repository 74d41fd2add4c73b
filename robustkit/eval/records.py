"""The per-batch record files of a run: ``DIR/records/rank-<r>.jsonl``, one JSON line per finished batch.

A line is written and flushed to disk as soon as its batch is finished, so an interrupted run loses at most
the batch in flight. A line cut short by the interruption is removed when the file is opened again.
Floats are written with Python's shortest round-tripping repr, so a resumed run reads back exactly the
numbers it wrote.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Dict, Iterator, List

import torch

RECORDS = "records"


def record_path(out: pathlib.Path, rank: int) -> pathlib.Path:
    return out / RECORDS / f"rank-{rank}.jsonl"


def has_records(out: pathlib.Path) -> bool:
    folder = out / RECORDS
    return folder.is_dir() and any(p.stat().st_size > 0 for p in folder.glob("rank-*.jsonl"))


def _drop_partial_line(path: pathlib.Path) -> None:
    """Truncates ``path`` after its last newline (a write interrupted mid-line leaves a fragment)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


def read_records(out: pathlib.Path) -> List[dict]:
    """Every complete batch record of every rank file, sorted by batch index (later duplicates dropped)."""
    by_batch: Dict[int, dict] = {}
    for path in sorted((out / RECORDS).glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue                 # the fragment of an interrupted write; its batch is redone
            by_batch.setdefault(record["batch"], record)
    return [by_batch[b] for b in sorted(by_batch)]


class RecordWriter:
    """Appends batch records to this rank's file; use as a context manager."""

    def __init__(self, out: pathlib.Path, rank: int):
        self.path = record_path(out, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _drop_partial_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def column(records: List[dict], key: str, attack: str = None, dtype=torch.float64) -> torch.Tensor:
    """Concatenates field ``key`` over the records (of attack ``attack`` when given) into a 1-D tensor."""
    values: List = []
    for r in records:
        values += (r["attacks"][attack] if attack is not None else r)[key]
    return torch.tensor(values, dtype=dtype)


def iter_transfer_columns(records: List[dict], attack: str) -> Iterator[tuple]:
    """``(target_model_name, clean [N], adversarial [N])`` int64 predictions of every transfer target
    recorded for ``attack``."""
    if not records:
        return
    for name in records[0]["attacks"][attack].get("transfer", {}):
        clean: List[int] = []
        adv: List[int] = []
        for r in records:
            clean += r["transfer_clean"][name]
            adv += r["attacks"][attack]["transfer"][name]
        yield name, torch.tensor(clean, dtype=torch.int64), torch.tensor(adv, dtype=torch.int64)


__all__ = ["record_path", "has_records", "read_records", "RecordWriter", "column", "iter_transfer_columns"]
