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
from robustkit.eval.records import RecordError, read_records, record_checksum, record_path, seal

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
    for line in lines:
        record = _strict(line)
        assert record["checksum"] == record_checksum(record) and len(record["checksum"]) == 16
    _strict((out / "results.json").read_text())
    _strict((out / "run.json").read_text())
    encoded = storage.dumps({"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "x": [1.5]})
    assert _strict(encoded) == {"nan": None, "inf": "inf", "ninf": "-inf", "x": [1.5]}
    assert [storage.to_float(v) for v in (None, "inf", "-inf", 2)][1:] == [math.inf, -math.inf, 2.0]


def test_a_checksum_survives_the_json_round_trip_of_nan_inf_and_floats():
    """Written as run-directory JSON (NaN as null, inf as "inf"), read back, the record still matches."""
    record = {"batch": 0, "l2": [math.nan, math.inf, -math.inf, 0.1, 1 / 3, 5e-324, 1.7976931348623157e308],
              "attacks": {"b": {"pred": [1, 2]}, "a": {"pred": []}}}
    read_back = json.loads(storage.dumps(seal(record), separators=(",", ":")))
    assert read_back["checksum"] == record_checksum(read_back) == record_checksum(record)
    read_back["l2"][3] = 0.10000000000000002          # one ulp
    assert record_checksum(read_back) != read_back["checksum"]


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
    """Each record is well-formed and sealed with a valid checksum: what refuses it is the check named."""
    out = _copy(finished, tmp_path)
    record = mutate(_first_record(out))
    _append(out, json.dumps(seal(record) if isinstance(record, dict) else record).encode())
    with pytest.raises(RecordError, match=message) as info:
        _run(out, resume=True)
    assert f"{record_path(out, 0)}:3" in str(info.value)       # two good lines, then the bad one


@pytest.mark.parametrize("change, message", [
    (lambda r: r["attacks"]["sign"]["pred"].__setitem__(0, (r["attacks"]["sign"]["pred"][0] + 1) % 10),
     "does not match its checksum"),
    (lambda r: r["x_l2"].__setitem__(3, r["x_l2"][3] * (1 + 2 ** -50)), "does not match its checksum"),
    (lambda r: r.__setitem__("checksum", "0" * 16), "does not match its checksum"),
    (lambda r: r.pop("checksum"), "has no checksum"),
])
def test_a_record_changed_after_it_was_written_is_refused_with_file_and_line(finished, tmp_path, change, message):
    """A change that still parses (a flipped prediction, the last bit of a float, a record of an older
    robustkit without a checksum) is refused, never summed."""
    out = _copy(finished, tmp_path)
    lines = record_path(out, 0).read_text().splitlines()
    record = json.loads(lines[1])
    change(record)
    lines[1] = json.dumps(record, separators=(",", ":"))
    record_path(out, 0).write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=message) as info:
        _run(out, resume=True)
    assert f"{record_path(out, 0)}:2 (batch 1)" in str(info.value)


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


# ---- randomized models ----------------------------------------------------------------------------------

def _randomized_run(out, defense_seed, **kw):
    """A RandomResizePad model (its own seeded generator, or torch's global one for ``defense_seed=None``)
    under a random-start PGD and FGSM: 60 images in 3 batches. A fresh model each call, as a new process has."""
    from robustkit.defenses import RandomResizePad
    model = RandomResizePad(small_model(), 28, min_scale=0.6, max_scale=1.0, seed=defense_seed).eval()
    attacks = {"pgd": _pgd_like(model), "fgsm": _fgsm_like(model)}
    results = evaluate(model, mnist_images(60), attacks, out=out, batch_size=20, progress=False, report=False,
                       checks="off", examples=0, **kw)
    return model, results


@pytest.mark.parametrize("defense_seed", [5, None])
def test_a_randomized_model_resumed_gives_the_uninterrupted_numbers(tmp_path, monkeypatch, defense_seed):
    """The runner seeds the model's randomness per batch (torch's global generator and the modules' own, from
    the run seed and the batch index), so the draws of a batch do not depend on the batches run before it in
    the process: an interrupted and resumed run, and a second run of the same model object, give the
    uninterrupted run's numbers, and the model's generator is left as it was."""
    model, reference = _randomized_run(tmp_path / "whole", defense_seed)
    state = model.generator.get_state() if defense_seed is not None else None
    torch.rand(1000)                     # the global generator moves on, as other work in the process would
    again = evaluate(model, mnist_images(60), {"pgd": _pgd_like(model), "fgsm": _fgsm_like(model)},
                     out=tmp_path / "again", batch_size=20, progress=False, report=False, checks="off", examples=0)
    assert comparable(again)["attacks"] == comparable(reference)["attacks"]
    assert _per_image(tmp_path / "again") == _per_image(tmp_path / "whole")
    if state is not None:
        assert torch.equal(model.generator.get_state(), state), "evaluate left the model's generator moved"

    real, calls = runner._evaluate_batch, []

    def killed_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_evaluate_batch", killed_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        _randomized_run(tmp_path / "cut", defense_seed)
    monkeypatch.undo()
    assert len(read_records(tmp_path / "cut")) == 1
    torch.rand(1000)
    _, resumed = _randomized_run(tmp_path / "cut", defense_seed, resume=True)
    assert comparable(resumed)["attacks"] == comparable(reference)["attacks"]
    assert resumed["n"] == reference["n"] == 60
    assert _per_image(tmp_path / "cut") == _per_image(tmp_path / "whole")


def _per_image(out):
    """Every batch's per-image outcomes (predictions and the perturbation norms, which depend on each input
    gradient through the random transform, so on every draw); the untrained tiny model's totals alone are too
    coarse to show a different draw."""
    return [(r["clean_pred"], {n: (a["pred"], a["l2"], a["linf"]) for n, a in r["attacks"].items()})
            for r in read_records(out)]


def _pgd_like(model):
    from robustkit.attacks import PGD
    return PGD(model, eps=0.1, steps=2, step_size=0.06, random_start=True)


def _fgsm_like(model):
    from robustkit.attacks import FGSM
    return FGSM(model, eps=0.1)


def test_the_model_randomness_is_drawn_per_batch(tmp_path):
    """Guards the test above: the two batches' draws differ (so a resume that replayed batch 0's draws for
    batch 1 would be caught), and another run seed changes them."""
    from robustkit.defenses import RandomResizePad
    model = RandomResizePad(small_model(), 28, min_scale=0.6, seed=5)
    x = mnist_images(4)[0]
    draws = {}
    for seed, batch in ((0, 0), (0, 1), (1, 0), (0, 0)):
        with runner.seeded(runner.batch_seed(seed, batch, -1), torch.device("cpu"), runner.module_generators([model])):
            draws.setdefault((seed, batch), []).append(model.transform(x))
    assert torch.equal(draws[(0, 0)][0], draws[(0, 0)][1])
    assert not torch.equal(draws[(0, 0)][0], draws[(0, 1)][0])
    assert not torch.equal(draws[(0, 0)][0], draws[(1, 0)][0])
