"""The streaming runner: records per batch, resume after an interruption, filters, seeding, results.json."""
import json

import pytest
import torch

from robustkit.eval import evaluate, runner
from robustkit.eval.records import read_records, record_path

from robustkit.attacks import FGSM

from ._helpers import comparable, mnist_images, real_attacks, small_model


def _run(out, n=60, **kw):
    model = small_model()
    kw.setdefault("batch_size", 20)
    return evaluate(model, mnist_images(n), real_attacks(model), out=out, progress=False, report=False, **kw)


def test_results_json_holds_metrics_settings_versions_and_device(tmp_path):
    res = _run(tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk == res
    for name in ("sign", "minimal"):
        m = res["attacks"][name]["metrics"]
        assert 0 <= m["robust_accuracy"] <= m["clean_accuracy"] <= 1 and m["n"] == 60
    assert res["software"]["torch"] == torch.__version__ and res["device"]["device"] == "cpu"
    assert res["settings"]["attacks"]["sign"]["params"]["eps"] == 0.1
    assert "eps_ref" in res["attacks"]["minimal"]["metrics"]           # a minimal-norm attack: curve + eps_ref
    assert res["curves"]["minimal"]["source"] == "minimal-norm run"
    assert len(read_records(tmp_path / "run")) == 3                    # 60 images in batches of 20


def test_interrupted_run_resumes_to_identical_results(tmp_path, monkeypatch):
    reference = _run(tmp_path / "whole")

    real = runner._evaluate_batch
    calls = []

    def dies_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt        # as if the job were killed
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_evaluate_batch", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", n=100)
    assert len(read_records(tmp_path / "cut")) == 2
    with open(record_path(tmp_path / "cut", 0), "a") as f:
        f.write('{"batch": 2, "y": [1, 2')      # a line cut short by the kill
    monkeypatch.setattr(runner, "_evaluate_batch", real)
    with pytest.raises(ValueError, match="limit"):                       # other settings: refused, not mixed
        _run(tmp_path / "cut", n=60, limit=60)
    resumed = _run(tmp_path / "cut", n=100)
    whole = _run(tmp_path / "whole100", n=100)
    assert comparable(resumed)["attacks"] == comparable(whole)["attacks"]
    assert [r["batch"] for r in read_records(tmp_path / "cut")] == [0, 1, 2, 3, 4]
    assert comparable(reference)["attacks"] != comparable(whole)["attacks"]   # the comparison can fail


def test_resume_false_refuses_a_directory_with_records(tmp_path):
    _run(tmp_path / "run", n=20)
    with pytest.raises(FileExistsError, match="resume"):
        _run(tmp_path / "run", n=20, resume=False)


def test_batch_seed_depends_only_on_seed_batch_and_attack():
    assert runner.batch_seed(0, 3, 1) == runner.batch_seed(0, 3, 1)
    assert len({runner.batch_seed(s, b, a) for s in range(3) for b in range(3) for a in range(2)}) == 18


def test_only_correct_and_per_class_filters(tmp_path):
    model = small_model()
    x, y = mnist_images(200)
    correct = model(x).argmax(1) == y
    res = evaluate(model, (x, y), {"sign": FGSM(model, eps=0.05)}, out=tmp_path / "f", only_correct=True,
                   per_class=2, batch_size=16, progress=False, report=False)
    selection = json.loads((tmp_path / "f" / "run.json").read_text())["selection"]
    assert all(correct[i] for i in selection) and res["clean"]["accuracy"] == 1.0
    labels = y[selection].tolist()
    assert max(labels.count(c) for c in set(labels)) <= 2
    # the first two correct images of each class, in dataset order
    expected = [i for i in range(200) if correct[i] and sum(1 for j in range(i) if correct[j] and y[j] == y[i]) < 2]
    assert selection == expected


def test_bad_arguments_name_the_argument(tmp_path):
    model = small_model()
    with pytest.raises(ValueError, match="limit"):
        evaluate(model, mnist_images(10), [FGSM(model)], out=tmp_path, limit=0)
    with pytest.raises(ValueError, match="metrics"):
        evaluate(model, mnist_images(10), [FGSM(model)], out=tmp_path, metrics=["nope"])
    with pytest.raises(TypeError, match="attacks"):
        evaluate(model, mnist_images(10), {"x": object()}, out=tmp_path)
