"""``robustkit reproduce self-distillation`` end to end on a tiny setting (four MNIST models trained on 300
images, 8 images, 5 attack steps, T in {1, 16}), and a killed run resumed to the same tables."""
from __future__ import annotations

import pytest

import robustkit.reproduce.self_distillation as self_distillation
from robustkit.reproduce import run_paper
from tests.reproduce._check import assert_every_cell_filled, model_cache

TINY = {"train_images": 300, "test_images": 500, "images": 8, "temperatures": [1.0, 16.0], "steps": 5}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with model_cache(tmp_path_factory.mktemp("cache")) as folder:
        yield folder


@pytest.fixture(scope="module")
def whole_run(cache, tmp_path_factory):
    return run_paper("self-distillation", out=tmp_path_factory.mktemp("sd") / "whole", limit=TINY, progress=False)


def test_every_table_is_filled(whole_run, one_thread):
    results = assert_every_cell_filled(whole_run, self_distillation.PAPER)
    cells = {(c["table"], c["row"], c["column"]): c for c in results["cells"]}
    assert len([k for k in cells if k[0] == "Table 1"]) == 16 + 2      # 4 x 4 matrix and the two means
    assert cells[("Table 3", "single black-box, eps=0.3000", "D-MIFGSM")]["paper"] == pytest.approx(0.2517, abs=1e-4)
    assert 0 <= cells[("Table 1", "mlp", "mlp")]["ours"] <= 1
    assert cells[("Fig. 1", "best T", "single black-box")]["ours"] in (1.0, 16.0)
    assert results["settings"]["images"] == 8 and (whole_run / "report.html").read_text().count("<svg") == 3


def test_a_killed_run_resumes_to_the_same_tables(whole_run, cache, tmp_path, monkeypatch, one_thread):
    real, calls = self_distillation.make_attack, []

    def dies_on_the_fifth_attack(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(self_distillation, "make_attack", dies_on_the_fifth_attack)
    with pytest.raises(KeyboardInterrupt):
        run_paper("self-distillation", out=tmp_path / "cut", limit=TINY, progress=False)
    assert len(list((tmp_path / "cut" / "steps").glob("*.json"))) == 1 + 4     # clean accuracy and 4 attacks
    monkeypatch.setattr(self_distillation, "make_attack", real)
    run_paper("self-distillation", out=tmp_path / "cut", limit=TINY, resume=True, progress=False)
    assert (tmp_path / "cut" / "tables.md").read_text() == (whole_run / "tables.md").read_text()
