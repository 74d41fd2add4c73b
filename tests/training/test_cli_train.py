"""``robustkit train``: every defense runs, model.pt is what ``robustkit eval --weights`` loads, resume, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from robustkit.cli import main
from robustkit.cli.specs import load_weights
from robustkit.models import LeNet

from .test_distributed import REPO

TINY = ["--model", "robustkit.models:LeNet", "--data", "mnist", "--limit", "40", "--eval-limit", "20",
        "--eval-steps", "2", "--batch-size", "20", "--epochs", "1", "--no-progress", "--steps", "2"]


# one defense in the quick suite; the rest (a few seconds each with the plot) in the slow one
@pytest.mark.parametrize("defense", ["fast"] + [pytest.param(d, marks=pytest.mark.slow)
                                                for d in ("madry", "goodfellow", "free", "trades", "clean")])
def test_each_defense_writes_a_loadable_model(one_thread, tmp_path, defense, capsys):
    out = tmp_path / defense
    assert main(["train", *TINY, "--defense", defense, "--replays", "2", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"model.pt", "checkpoint.pt", "history.json", "history.png"}
    model = load_weights(LeNet(), str(out / "model.pt"))     # what robustkit eval --weights does
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved["model"][key])
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 1 and "robust_accuracy" in history["epochs"][0]
    assert f"train {defense}: 1 epochs" in capsys.readouterr().out


def test_resume_and_refusals(one_thread, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--defense", "fast", "--out", out]) == 0
    assert main(["train", *TINY, "--defense", "fast", "--out", out]) == 2       # would overwrite: refused
    assert "pass resume=True" in capsys.readouterr().err
    assert main(["train", *TINY, "--defense", "madry", "--out", out, "--resume"]) == 2   # another run
    assert "holds another run's checkpoint (it differs in objective)" in capsys.readouterr().err
    assert main(["train", *TINY, "--defense", "fast", "--out", out, "--resume"]) == 0   # finished: no-op
    assert main(["train", *TINY, "--defense", "fast", "--eps", "two", "--out", str(tmp_path / "x")]) == 2
    assert "--eps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", *TINY, "--defense", "pgd", "--out", str(tmp_path / "y")])


def test_eps_warmup(one_thread, tmp_path, capsys):
    out = tmp_path / "warm"
    assert main(["train", *TINY, "--defense", "fast", "--eps-warmup", "0.75", "--epochs", "2",
                 "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    # 2 steps an epoch, a ramp over ceil(0.75 * 4) = 3 steps: 2/3 of the budget at the end of the first epoch
    assert [epoch["budget_scale"] for epoch in history["epochs"]] == pytest.approx([2 / 3, 1.0])
    assert main(["train", *TINY, "--defense", "clean", "--eps-warmup", "0.5", "--out", str(tmp_path / "c")]) == 2
    assert "eps_warmup needs an objective with a perturbation budget" in capsys.readouterr().err


@pytest.mark.slow   # two fresh processes under torchrun
def test_under_torchrun(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "robustkit", "train", *TINY, "--defense", "goodfellow", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("train goodfellow: 1 epochs") == 1      # rank 0 alone reports and writes
    load_weights(LeNet(), str(tmp_path / "ddp" / "model.pt"))
