"""The per-batch record files of a run: ``DIR/records/rank-<r>.jsonl``, one JSON line per finished batch.

A line is written and flushed to disk as soon as its batch is finished, so an interrupted run loses at most
the batch in flight. A line cut short by the interruption is removed when the file is opened again.
Floats are written with Python's shortest round-tripping repr, so a resumed run reads back exactly the
numbers it wrote; NaN and infinities as in :mod:`robustkit.eval.storage` (standard JSON, as results.json).
Every record carries the fingerprint of its run's settings, so a resume can prove that a record belongs to it,
and a checksum of its own content (:func:`record_checksum`), so that a line changed after it was written (a
flipped digit that still parses, an edit by hand) is refused instead of summed.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from robustkit.eval.storage import dumps, names_disk_full, to_float

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


#: Keys every batch record has.
RECORD_KEYS = ("batch", "index", "y", "clean_pred", "num_classes", "x_l2", "x_linf", "transfer_clean", "attacks",
               "fingerprint")


CHECKSUM = "checksum"


class RecordError(ValueError):
    """A record line that parses but cannot be shown to belong to this run; the message names file and line."""


def record_checksum(record: dict) -> str:
    """SHA-256 (16 hex digits) of ``record``'s canonical JSON: every key but ``"checksum"``, keys sorted, no
    spaces, floats in shortest repr, NaN and infinities in the run-directory encoding. A record reads back from
    its line as exactly these values, so the checksum of what was read equals the one written with it."""
    body = {k: v for k, v in record.items() if k != CHECKSUM}
    return hashlib.sha256(dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def seal(record: dict) -> dict:
    """``record`` with its ``"checksum"`` (what :class:`RecordWriter` writes)."""
    return {**{k: v for k, v in record.items() if k != CHECKSUM}, CHECKSUM: record_checksum(record)}


def _lines(path: pathlib.Path) -> Iterator[Tuple[int, bytes]]:
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]      # a trailing fragment is an interrupted write, redone
    for number, line in enumerate(complete.split(b"\n")[:-1], start=1):
        if line.strip():
            yield number, line


def _check(record, where: str, fingerprint: Optional[str], batches: Optional[Sequence[Sequence[int]]],
           attacks: Optional[Sequence[str]]) -> None:
    if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS):
        missing = [k for k in RECORD_KEYS if k not in record] if isinstance(record, dict) else None
        what = f"missing {', '.join(missing)}" if missing else f"a JSON {type(record).__name__}"
        raise RecordError(f"records: {where} is not a batch record ({what}); remove the line or choose another "
                          "directory")
    batch = record["batch"]
    if CHECKSUM not in record:
        raise RecordError(f"records: {where} (batch {batch!r}) has no checksum (it was written by a robustkit that "
                          "did not record one), so it cannot be shown intact; delete the directory's records/ "
                          "folder to recompute its batches, or choose another directory")
    if record[CHECKSUM] != record_checksum(record):
        raise RecordError(f"records: {where} (batch {batch!r}) does not match its checksum: the line changed after "
                          "it was written; delete the line to recompute its batch, or choose another directory")
    if fingerprint is not None and record["fingerprint"] != fingerprint:
        raise RecordError(f"records: {where} (batch {batch}) was written with other settings (fingerprint "
                          f"{record['fingerprint']}, this run {fingerprint}); use another directory")
    if batches is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch < len(batches):
            raise RecordError(f"records: {where} holds batch {batch!r}, outside this run's plan of {len(batches)} "
                              "batches; use another directory")
        if record["index"] != list(batches[batch]):
            raise RecordError(f"records: {where}: batch {batch} holds other images than this run's plan; use "
                              "another directory")
    if attacks is not None and sorted(record["attacks"]) != sorted(attacks):
        raise RecordError(f"records: {where}: batch {batch} has attacks {sorted(record['attacks'])}, this run "
                          f"{sorted(attacks)}; use another directory")


def read_records(out: pathlib.Path, *, fingerprint: Optional[str] = None,
                 batches: Optional[Sequence[Sequence[int]]] = None,
                 attacks: Optional[Sequence[str]] = None) -> List[dict]:
    """Every complete batch record of every rank file, sorted by batch index (later duplicates dropped).

    A line that is not UTF-8 JSON (the trace of a crash or a bad disk) is skipped with a warning naming its
    file and line, so its batch is redone. A line that parses but is not a record of this run raises
    :class:`RecordError` naming file and line: not a record, no checksum or one its content does not match
    (:func:`record_checksum`), another ``fingerprint`` (the hash of the run's settings that every record
    carries), a batch outside ``batches`` (the plan: image indices per batch) or other images than the
    plan's, or other ``attacks``."""
    by_batch: Dict[int, dict] = {}
    for path in sorted((out / RECORDS).glob("rank-*.jsonl")):
        for number, line in _lines(path):
            where = f"{path}:{number}"
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                warnings.warn(f"records: {where} is not a JSON line ({type(error).__name__}); ignored, its batch "
                              "is redone", stacklevel=2)
                continue
            _check(record, where, fingerprint, batches, attacks)
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
        with names_disk_full(self.path):
            self._file.write(dumps(seal(record), separators=(",", ":")) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:      # the flush of a write that already failed for lack of space
            pass

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def column(records: List[dict], key: str, attack: str = None, dtype=torch.float64) -> torch.Tensor:
    """Concatenates field ``key`` over the records (of attack ``attack`` when given) into a 1-D tensor."""
    values: List = []
    for r in records:
        values += (r["attacks"][attack] if attack is not None else r)[key]
    if dtype.is_floating_point:
        values = [to_float(v) for v in values]
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


__all__ = ["record_path", "has_records", "read_records", "RecordWriter", "RecordError", "RECORD_KEYS", "CHECKSUM",
           "record_checksum", "seal", "column", "iter_transfer_columns"]
