"""How a run directory is written: one JSON encoding, atomic files under unique temporary names, errors that
say "disk full", and the lock that keeps two processes out of one directory.

JSON: every file of a run (``records/*.jsonl``, ``run.json``, ``results.json``) is standard JSON. A NaN is
written as ``null`` and an infinity as the string ``"inf"`` / ``"-inf"``; :func:`to_float` reads them back.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pathlib
import secrets
from typing import Any, Callable, Iterator, Optional

LOCK_FILE = ".lock-rank-{rank}"


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN as None and ±inf as ``"inf"`` / ``"-inf"`` (recursively through dicts and lists)."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """Standard JSON of ``obj`` in the run-directory encoding (see the module docstring)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def read_json(path: pathlib.Path, who: str, remedy: str) -> Any:
    """The JSON in ``path``; a file that is not UTF-8 JSON is a ``ValueError`` naming it (``who: path is not
    valid JSON (...); remedy``)."""
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{who}: {path} is not valid JSON ({error}); {remedy}") from None


def to_float(value: Any) -> float:
    """A float read from run-directory JSON: None -> nan, ``"inf"`` / ``"-inf"`` -> ±inf."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(value)       # "inf", "-inf"
    return float(value)


class DiskFullError(OSError):
    """A write ran out of space; the message names the file."""

    def __init__(self, path: os.PathLike, detail: str = ""):
        super().__init__(f"disk full writing {path}" + (f" ({detail})" if detail else ""))
        self.errno = errno.ENOSPC
        self.filename = str(path)

    def __str__(self) -> str:
        return self.args[0]


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    # torch.save reports a short write from its zip writer as "[enforce fail at inline_container.cc:...]
    # unexpected pos N vs M" (a RuntimeError that does not mention the disk)
    return isinstance(error, RuntimeError) and ("inline_container" in str(error) or "unexpected pos" in str(error))


@contextlib.contextmanager
def names_disk_full(path: os.PathLike) -> Iterator[None]:
    """Turns a full-disk error inside the block into :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as error:
        if _is_disk_full(error):
            raise DiskFullError(path, str(error).splitlines()[0] if str(error) else "") from error
        raise


def write_atomic(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    """``write(temporary)`` then rename over ``path``: readers see the old file or the new one, never half of
    one. The temporary name is unique to this process and call, so concurrent writers never share it; it is
    removed when the write fails."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with names_disk_full(path):
            write(temporary)
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: pathlib.Path, obj: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(dumps(obj, indent=1)))


def remove_stale_temporaries(out_dir: pathlib.Path) -> None:
    """Deletes the temporary files an interrupted process left in ``out_dir`` (call while holding the lock)."""
    for stale in out_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


class OutputLock:
    """An exclusive ``flock`` on ``out_dir/.lock-rank-<rank>`` for the duration of a run: a second process
    evaluating into the same directory (as the same rank) is refused at once, with a message, instead of
    duplicating work and racing on the files. The kernel drops the lock when the process dies."""

    def __init__(self, out_dir: pathlib.Path, rank: int = 0):
        self.path = pathlib.Path(out_dir) / LOCK_FILE.format(rank=rank)
        self._file: Optional[Any] = None

    def acquire(self) -> "OutputLock":
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FileExistsError(f"out: another process is evaluating into {str(self.path.parent)!r} (it holds "
                                  f"{self.path.name}); wait for it to finish or choose another directory") from None
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()      # closing the descriptor releases the flock
            self._file = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["json_safe", "dumps", "read_json", "to_float", "DiskFullError", "names_disk_full", "write_atomic", "write_json",
           "remove_stale_temporaries", "OutputLock"]
