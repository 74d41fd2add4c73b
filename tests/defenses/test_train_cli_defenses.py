"""``robustkit train --defense alp|clp|squeeze|distill|parseval``: the options reach the objectives and the
constraint, and bad values give one line naming the option."""
from __future__ import annotations

import pytest
import torch

from robustkit.cli import main
from robustkit.defenses import parseval_tightness
from robustkit.models import LeNet

COMMON = ["train", "--model", "robustkit.models:LeNet", "--epochs", "1", "--limit", "64", "--eval-limit", "16",
          "--eval-steps", "1", "--no-progress"]


@pytest.mark.parametrize("extra, message", [
    (["--defense", "distill", "--temperature", "0"], "--defense distill: TemperatureCrossEntropy: temperature must be"),
    (["--defense", "parseval", "--parseval-fraction", "1.5"], r"Parseval: fraction must be a number in \(0, 1\]"),
    (["--defense", "parseval", "--parseval-beta", "-1"], "Parseval: beta must be a finite number > 0"),
    (["--defense", "clp", "--clp-weight", "-0.5"], "LogitPairing: clean must be a finite number >= 0"),
    (["--defense", "alp", "--alp-weight", "-1"], "LogitPairing: adversarial must be a finite number >= 0"),
])
def test_bad_values_name_the_option(tmp_path, capsys, extra, message, one_thread):
    assert main(COMMON + ["--out", str(tmp_path / "run")] + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("robustkit train: error:")
    assert pytest.importorskip("re").search(message, err[0]), err[0]


def test_parseval_runs_the_constraint(tmp_path, one_thread):
    """The same tiny run with and without --defense parseval (a large beta so one epoch shows it)."""
    tightness = {}
    for defense in ("clean", "parseval"):
        out = tmp_path / defense
        assert main(COMMON + ["--out", str(out), "--defense", defense, "--parseval-beta", "0.05",
                              "--parseval-fraction", "1.0"]) == 0
        model = LeNet()
        model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
        tightness[defense] = sum(parseval_tightness(model).values())
    assert tightness["parseval"] < tightness["clean"]
