"""Fault injection for the evaluation runner: SIGKILL at random points, a full disk (a real small tmpfs where
this process may mount one, and a patched mid-line ENOSPC everywhere), truncated and corrupted record files,
and two writers on one output directory.

Every trial ends either with exactly the uninterrupted run's numbers or with a clear refusal; never with a
silently wrong total. (test_resume.py covers the single refusals: stray records, corrupt run.json, the lock
held by a bare process, unique temporaries, a full disk in torch.save/fsync; this file injects the faults into
real runs at random points.)
"""
import errno
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest

from robustkit.eval import evaluate
from robustkit.eval import records as records_module
from robustkit.eval.records import RecordError, record_path

from . import _fault_worker
from ._helpers import comparable

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run_here(out, **overrides):
    model, data, attacks, kwargs = _fault_worker.settings()
    return evaluate(model, data, attacks, out=out, **{**kwargs, **overrides})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its directory and its results, with what legitimately differs stripped."""
    out = tmp_path_factory.mktemp("reference") / "run"
    results = _run_here(out)
    assert results["n"] == 64
    return out, comparable(results)


def _numbers(out):
    return comparable(json.loads((pathlib.Path(out) / "results.json").read_text()))


def _worker(out, **env_extra) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env_extra}
    return subprocess.Popen([sys.executable, "-m", "tests.eval._fault_worker", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(out) -> int:
    path = record_path(pathlib.Path(out), 0)
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow      # four child processes: ~20 s on an idle machine, 90 s on the loaded 2-core one
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_numbers(reference, tmp_path):
    """One campaign: three SIGKILLs, each after a seeded random number of finished batches plus a random
    delay (so that most land inside a batch, some inside a write), each followed by a resume."""
    rng = random.Random(2024)
    out = tmp_path / "killed"
    kills = []
    for _ in range(3):
        before = _lines(out)
        wait_for = before + rng.randint(0, 2)
        proc = _worker(out)
        deadline = time.monotonic() + 120
        while _lines(out) < wait_for and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
        kills.append((proc.returncode, _lines(out)))
    finisher = _worker(out)
    stdout, stderr = finisher.communicate(timeout=180)
    assert finisher.returncode == 0, stderr[-2000:]
    assert stdout.strip() == "DONE 64"
    assert any(code == -signal.SIGKILL for code, _ in kills), f"no kill landed mid-run: {kills}"
    assert _numbers(out) == reference[1], f"kills at (status, finished lines) {kills}"
    batches = [json.loads(line)["batch"] for line in record_path(out, 0).read_text().splitlines()]
    assert sorted(batches) == list(range(8)), "a batch was lost or computed twice"


def test_two_writers_on_one_out_the_second_refuses(reference, tmp_path):
    """A child evaluates into ``out`` and pauses after its first batch; a second evaluation into the same
    directory is refused at once, and the first then finishes with the uninterrupted numbers."""
    out, hold = tmp_path / "shared", tmp_path / "go-on"
    first = _worker(out, FAULT_WORKER_HOLD=str(hold))
    try:
        deadline = time.monotonic() + 120
        while _lines(out) < 1 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, first.communicate()[1][-2000:]
        with pytest.raises(FileExistsError, match=r"out: another process is evaluating into .*shared"):
            _run_here(out)
        assert _lines(out) == 1, "the refused writer wrote records"
    finally:
        hold.touch()
    stdout, stderr = first.communicate(timeout=180)
    assert first.returncode == 0 and stdout.strip() == "DONE 64", stderr[-2000:]
    assert _numbers(out) == reference[1]


@pytest.mark.slow
def test_two_writers_started_together_never_give_a_wrong_total(reference, tmp_path):
    out = tmp_path / "race"
    procs = [_worker(out), _worker(out)]
    results = [p.communicate(timeout=240) + (p.returncode,) for p in procs]
    codes = sorted(code for _, _, code in results)
    assert codes in ([0, 3], [0, 0]), results        # [0, 0]: the second began after the first had finished
    for stdout, stderr, code in results:
        assert code == 0 and stdout.strip() == "DONE 64" or "another process is evaluating" in stdout, stderr[-2000:]
    assert _numbers(out) == reference[1]


# ---- full disk ------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """An 8 KiB tmpfs: two pages, room for run.json and about 3 of the 8 record lines. Needs root; skipped
    where mounting is not allowed (the patched mid-line ENOSPC test below runs everywhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_real_full_disk_is_refused_as_disk_full_and_resumes_once_there_is_space(reference, tiny_disk):
    out = tiny_disk / "run"
    with pytest.raises(OSError, match=r"disk full writing") as info:
        _run_here(out)
    assert info.value.errno == errno.ENOSPC
    finished = _lines(out)
    assert 0 < finished < 8, f"the disk should fill mid-run, not after {finished} of 8 batches"
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_disk)], check=True)
    resumed = _run_here(out)
    assert comparable(resumed) == reference[1]
    assert not list(out.glob(".*.tmp")), "a temporary file of the failed write was left behind"


def test_enospc_in_the_middle_of_a_record_line_refuses_then_resumes(reference, tmp_path, monkeypatch):
    """The write of the 4th record puts half its line on disk, then the disk is full."""
    calls = {"n": 0}
    real_write = records_module.RecordWriter.write

    def half_then_full(self, record):
        calls["n"] += 1
        if calls["n"] == 4:
            line = records_module.dumps(record, separators=(",", ":"))
            self._file.write(line[:len(line) // 2])
            self._file.flush()
            with records_module.names_disk_full(self.path):
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, record)

    monkeypatch.setattr(records_module.RecordWriter, "write", half_then_full)
    out = tmp_path / "full"
    with pytest.raises(OSError, match=r"disk full writing .*rank-0\.jsonl"):
        _run_here(out)
    assert record_path(out, 0).read_bytes().count(b"\n") == 3     # three whole lines and a fragment
    monkeypatch.undo()
    assert comparable(_run_here(out)) == reference[1]


def test_enospc_writing_results_json_refuses_then_resumes(reference, tmp_path, monkeypatch):
    from robustkit.eval import runner

    real = runner.write_json

    def failing_results(path, obj):
        if pathlib.Path(path).name == "results.json":
            from robustkit.eval.storage import DiskFullError
            raise DiskFullError(path, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(runner, "write_json", failing_results)
    out = tmp_path / "merge"
    with pytest.raises(OSError, match=r"disk full writing .*results\.json"):
        _run_here(out)
    assert not (out / "results.json").exists()
    monkeypatch.undo()
    assert comparable(_run_here(out)) == reference[1]      # every batch was kept; only the merge is redone


# ---- truncated and corrupted records --------------------------------------------------------------------

def _copy(reference, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(reference[0], out)
    (out / "results.json").unlink()
    return out


def test_records_truncated_at_random_offsets_resume_to_the_same_numbers(reference, tmp_path):
    rng = random.Random(7)
    size = record_path(reference[0], 0).stat().st_size
    for trial, cut in enumerate([0, 1, size - 1] + [rng.randrange(size) for _ in range(3)]):
        out = _copy(reference, tmp_path, f"cut{trial}")
        with open(record_path(out, 0), "r+b") as f:
            f.truncate(cut)
        assert comparable(_run_here(out)) == reference[1], f"truncated at byte {cut} of {size}"


@pytest.mark.parametrize("corruption", ["non-utf8", "zero-filled block", "garbage span", "flipped digit"])
def test_corrupted_records_are_redone_or_refused_never_summed(reference, tmp_path, corruption):
    """A crash or a bad disk leaves bytes that are not a record: the line is skipped with a warning naming file
    and line and its batch redone (same numbers), or the resume is refused naming the file (a record that
    parses but fails its checksum or another check)."""
    rng = random.Random(corruption)
    out = _copy(reference, tmp_path, "corrupt")
    path = record_path(out, 0)
    data = bytearray(path.read_bytes())
    start = rng.randrange(len(data) - 64)
    if corruption == "non-utf8":
        data[start] = 0xFF
    elif corruption == "zero-filled block":
        data[start:start + 64] = bytes(64)
    elif corruption == "garbage span":
        data[start:start + 10] = b'#garbage{"'
    else:           # a digit that still parses: only the record's checksum can tell
        digits = [i for i, byte in enumerate(data) if chr(byte).isdigit()]
        start = rng.choice(digits)
        data[start] = ord(str((int(chr(data[start])) + rng.randint(1, 9)) % 10))
    path.write_bytes(bytes(data))
    try:
        # not pytest.warns: it fails the test when the call raises, and a refusal is an allowed outcome here
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed = _run_here(out)
    except RecordError as error:
        assert str(path) in str(error)
        assert corruption != "flipped digit" or "does not match its checksum" in str(error), str(error)
        return
    assert corruption != "flipped digit", "a flipped digit was accepted"
    assert any(re.search(r"rank-0\.jsonl:\d+ is not a JSON line", str(w.message)) for w in caught), \
        [str(w.message) for w in caught]
    assert comparable(resumed) == reference[1]


def test_a_flipped_digit_in_a_record_is_not_summed_silently(reference, tmp_path):
    """A digit flipped inside a record line still parses; the record's checksum refuses it, naming file and
    line (in place of summing a wrong prediction into the totals)."""
    out = _copy(reference, tmp_path, "flipped")
    path = record_path(out, 0)
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    record["attacks"]["pgd"]["pred"] = [(p + 1) % 10 for p in record["attacks"]["pgd"]["pred"]]
    lines[2] = json.dumps(record, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"does not match its checksum") as info:
        _run_here(out)
    assert f"{path}:3" in str(info.value)
    assert not (out / "results.json").exists(), "a refused resume wrote totals"
