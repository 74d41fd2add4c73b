"""bench/harness.py: the rotating order, paired ratios, checks that exit, machine labels and the result file."""
import json
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import harness  # noqa: E402


def test_rotating_order_shifts_the_first_method_every_round():
    calls = []
    fns = {name: (lambda n: lambda: calls.append(n))(name) for name in "abc"}
    harness.timeit(fns, rounds=4, warmup=0)
    assert calls == list("abc" "bca" "cab" "abc")
    calls.clear()
    harness.timeit(fns, rounds=2, warmup=1, order="fixed")
    assert calls == list("abc" "abc" "abc")  # the warm-up, then two rounds in the dict's order


def test_once_runs_in_the_first_round_only_and_samples_are_kept_per_round():
    calls = []
    t = harness.timeit({"fast": lambda: calls.append("fast"), "slow": lambda: calls.append("slow")},
                       rounds=3, warmup=0, once=["slow"], clock="wall")
    assert calls.count("slow") == 1 and calls.count("fast") == 3
    assert len(t.rounds["fast"]) == 3 and len(t.rounds["slow"]) == 1
    assert len(t.cpu["fast"]) == len(t.wall["fast"]) == 3


def test_paired_ratios_are_the_median_of_within_round_ratios():
    # the machine slowed down for rounds 2 and 3, on both methods alike: within a round they tie
    rounds = {"ref": [1.0, 3.0, 3.0], "x": [1.0, 3.0, 1.0]}
    ratios = harness.paired_ratios(rounds, "ref")
    assert ratios["ref"] == 1.0
    assert ratios["x"] == 1.0  # median of 1, 1, 3; the ratio of the medians would say 3 / 1
    # per: rates instead of times (x does twice the images per call)
    assert harness.paired_ratios({"ref": [1.0], "x": [1.0]}, "ref", per={"x": 2})["x"] == 2.0


def test_timings_pick_the_clock_and_write_paired_ratios():
    t = harness.Timings(clock="cpu", wall={"a": [4.0, 4.0], "b": [1.0, 1.0]}, cpu={"a": [2.0, 2.0], "b": [1.0, 1.0]})
    assert t.median() == {"a": 2.0, "b": 1.0} and t.median("wall") == {"a": 4.0, "b": 1.0}
    assert t.minimum() == {"a": 2.0, "b": 1.0}
    out = t.to_json(["a", "missing"])
    assert out["paired_ratios"] == {"vs a": {"a": 1.0, "b": 2.0}}
    assert out["seconds"] == {"a": 2.0, "b": 1.0} and out["wall_seconds"] == {"a": 4.0, "b": 1.0}


def test_timeit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="clock"):
        harness.timeit({"a": lambda: None}, clock="gpu")
    with pytest.raises(ValueError, match="order"):
        harness.timeit({"a": lambda: None}, order="random")
    with pytest.raises(ValueError, match="once"):
        harness.timeit({"a": lambda: None}, once=["b"])
    with pytest.raises(ValueError, match="rounds"):
        harness.timeit({"a": lambda: None}, rounds=0)


def test_check_close_returns_statistics_and_exits_on_a_mismatch():
    a = torch.zeros(4, 3)
    stats = harness.check_close("same", a, a + 1e-7, atol=1e-6)
    assert stats["frac_samples_close"] == 1.0 and stats["max_abs_diff"] < 1e-6
    b = a.clone()
    b[1, 0] = 1.0
    with pytest.raises(SystemExit) as info:
        harness.check_close("one sample off", a, b, atol=1e-6)
    assert "one sample off" in str(info.value) and info.value.code != 0
    assert harness.check_close("3 of 4 is enough", a, b, atol=1e-6, min_fraction=0.75)["frac_samples_close"] == 0.75
    with pytest.raises(SystemExit, match="shape"):
        harness.check_close("shapes", a, a[:2])
    with pytest.raises(SystemExit, match="success"):
        harness.check_at_least("success", 0.5, 0.9)
    with pytest.raises(SystemExit, match="broken"):
        harness.check(False, "broken")


def test_machine_label_is_derived_or_overridden(monkeypatch):
    monkeypatch.delenv(harness.LABEL_ENV, raising=False)
    assert harness.machine_label() == f"cpu-{harness.cpu_cores()}core"
    monkeypatch.setenv(harness.LABEL_ENV, "my-box")
    assert harness.machine_label() == "my-box"


def test_result_writes_strict_json_with_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(harness.LABEL_ENV, str(tmp_path / "label"))
    path = harness.Result("demo", rows=[{"x": float("nan"), "t": torch.tensor([1.0, float("inf")])}],
                          notes={"n": torch.tensor(3)}).write()
    assert path == tmp_path / "label" / "demo.json"
    data = json.loads(path.read_text())  # strict: no NaN / Infinity tokens
    assert data["rows"] == [{"x": None, "t": [1.0, None]}] and data["notes"] == {"n": 3}
    env = data["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert data["command"] == env["command"] and env["machine_label"] == str(tmp_path / "label")
