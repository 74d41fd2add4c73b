"""Resume refuses what it cannot prove belongs to the run; one process per output directory; partial and
full-disk writes; one JSON encoding for every file of a run."""
import errno
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from robustkit.eval import evaluate, runner, storage
from robustkit.eval.records import RecordError, read_records, record_path

from ._helpers import comparable, mnist_images, real_attacks, small_model


def _run(out, n=40, **kw):
    model = small_model()
    kw.setdefault("batch_size", 20)
    kw.setdefault("report", False)
    return evaluate(model, mnist_images(n), real_attacks(model), out=out, progress=False, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    return out, _run(out, examples=2)


def _copy(finished, tmp_path):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    return out


def _strict(text):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_every_record_carries_the_settings_fingerprint_and_all_files_are_standard_json(finished):
    out, results = finished
    lines = record_path(out, 0).read_text().splitlines()
    fingerprints = {_strict(line)["fingerprint"] for line in lines}
    assert fingerprints == {runner.settings_fingerprint(results["settings"])}
    _strict((out / "results.json").read_text())
    _strict((out / "run.json").read_text())
    encoded = storage.dumps({"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "x": [1.5]})
    assert _strict(encoded) == {"nan": None, "inf": "inf", "ninf": "-inf", "x": [1.5]}
    assert [storage.to_float(v) for v in (None, "inf", "-inf", 2)][1:] == [math.inf, -math.inf, 2.0]


def test_records_without_run_json_are_refused_not_reused(finished, tmp_path):
    out = _copy(finished, tmp_path)
    (out / "run.json").unlink()
    model = small_model()
    # the reliability review's case: the run was at eps 0.1; a resume at 0.3 must not reuse its batches
    from robustkit.attacks import PGD
    with pytest.raises(ValueError, match="no run.json"):
        evaluate(model, mnist_images(40), {"sign": PGD(model, eps=0.3, steps=2, step_size=0.2)}, out=out,
                 batch_size=20, progress=False, report=False)


@pytest.mark.parametrize("content", ["{not json", "[1, 2", '{"settings": {}}', "[]"])
def test_a_corrupt_run_json_is_named(finished, tmp_path, content):
    out = _copy(finished, tmp_path)
    (out / "run.json").write_text(content)
    with pytest.raises(ValueError, match="run.json"):
        _run(out)


def _append(out, line: bytes):
    with open(record_path(out, 0), "ab") as f:
        f.write(line + b"\n")


def _first_record(out):
    return json.loads(record_path(out, 0).read_text().splitlines()[0])


@pytest.mark.parametrize("mutate, message", [
    (lambda r: {**r, "batch": 999}, "outside this run's plan"),
    (lambda r: {**r, "batch": -1}, "outside this run's plan"),
    (lambda r: {**r, "batch": "0"}, "outside this run's plan"),
    (lambda r: {**r, "fingerprint": "0" * 16}, "other settings"),
    (lambda r: {**r, "index": [i + 1 for i in r["index"]]}, "other images"),
    (lambda r: {**r, "attacks": {}}, "attacks"),
    (lambda r: {k: v for k, v in r.items() if k != "fingerprint"}, "missing fingerprint"),
    (lambda r: {}, "not a batch record"),
    (lambda r: [1, 2, 3], "not a batch record"),
])
def test_a_record_that_is_not_this_runs_is_refused_with_file_and_line(finished, tmp_path, mutate, message):
    out = _copy(finished, tmp_path)
    _append(out, json.dumps(mutate(_first_record(out))).encode())
    with pytest.raises(RecordError, match=message) as info:
        _run(out, resume=True)
    assert f"{record_path(out, 0)}:3" in str(info.value)       # two good lines, then the bad one


def test_an_undecodable_line_is_skipped_with_a_warning_and_its_batch_redone(finished, tmp_path):
    out = _copy(finished, tmp_path)
    lines = record_path(out, 0).read_bytes().splitlines()
    record_path(out, 0).write_bytes(b"\xff\xfe garbage\n" + lines[1] + b"\n")     # batch 0 lost to bad bytes
    with pytest.warns(UserWarning, match=r"rank-0.jsonl:1 is not a JSON line"):
        resumed = _run(out, resume=True)
    assert comparable(resumed)["attacks"] == comparable(finished[1])["attacks"]
    with pytest.warns(UserWarning):
        assert [r["batch"] for r in read_records(out)] == [0, 1]


def test_a_second_process_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "locked"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from robustkit.eval.storage import OutputLock
        lock = OutputLock({str(out)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FileExistsError, match="another process is evaluating"):
            _run(out)
    finally:
        holder.kill()
        holder.wait()
    _run(out)          # the lock went with the process


def test_temporary_files_are_unique_and_removed_on_failure(tmp_path):
    names = []

    def fails(tmp):
        names.append(tmp.name)
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    for _ in range(2):
        with pytest.raises(storage.DiskFullError, match=f"disk full writing {tmp_path / 'x.json'}"):
            storage.write_atomic(tmp_path / "x.json", fails)
    assert len(set(names)) == 2 and all(str(os.getpid()) in n for n in names)
    assert list(tmp_path.iterdir()) == []


def test_missing_examples_are_regenerated_on_resume(finished, tmp_path):
    out = _copy(finished, tmp_path)
    original = torch.load(out / "examples.pt", weights_only=True)
    (out / "examples.pt").unlink()
    (out / ".examples.pt.12345.abcd.tmp").write_bytes(b"PK\x03\x04 half written")    # left by a full disk
    _run(out, resume=True, examples=2)
    again = torch.load(out / "examples.pt", weights_only=True)
    assert torch.equal(again["x"], original["x"])
    for name in original["adv"]:
        assert torch.equal(again["adv"][name], original["adv"][name])
    assert not list(out.glob(".*.tmp"))


def test_a_full_disk_is_named(tmp_path, monkeypatch):
    def short_write(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 159232 vs 159120")

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(OSError, match=r"disk full writing .*examples\.pt"):
        _run(tmp_path / "a", examples=2)
    monkeypatch.undo()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match=r"disk full writing .*rank-0\.jsonl"):
        _run(tmp_path / "b", examples=0)
    monkeypatch.undo()
    resumed = _run(tmp_path / "b", examples=0, resume=True)      # the cut line is dropped, the batch redone
    assert resumed["n"] == 40


def test_out_pointing_at_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        _run(tmp_path / "file")


def test_targeted_evaluation_runs_the_attacks_toward_the_target(tmp_path):
    model = small_model()
    x, y = mnist_images(40)
    res = _run(tmp_path / "ll", target="least_likely")
    records = read_records(tmp_path / "ll")
    target = torch.tensor([t for r in records for t in r["attacks"]["sign"]["target"]])
    with torch.no_grad():
        assert torch.equal(target, model(x).argmin(dim=1))
    assert res["settings"]["target"] == "least_likely" and "targeted_success" in res["attacks"]["sign"]["metrics"]
    with pytest.raises(ValueError, match="target"):
        _run(tmp_path / "bad", target="most_likely")


def test_the_runner_passes_a_generator_and_leaves_the_attack_seed_alone(tmp_path, monkeypatch):
    model = small_model()
    attacks = real_attacks(model)
    attacks["sign"].seed = 123
    seen = []
    real_run = type(attacks["sign"]).run

    def spy(self, x, y, target=None, *, generator=None):
        seen.append((generator, self.seed))
        return real_run(self, x, y, target, generator=generator)

    monkeypatch.setattr(type(attacks["sign"]), "run", spy)
    evaluate(model, mnist_images(40), attacks, out=tmp_path / "g", batch_size=20, progress=False, report=False)
    assert len(seen) == 2 and all(isinstance(g, torch.Generator) and seed == 123 for g, seed in seen)
    assert attacks["sign"].seed == 123
