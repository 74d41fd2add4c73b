"""fit under torchrun: two gloo processes on CPU train on disjoint shards and reach the weights of one process
with the same global batch, up to float rounding; only rank 0 writes."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

import robustkit as rk
from robustkit.training import fit

from ._common import tiny_data, tiny_model

REPO = pathlib.Path(__file__).resolve().parents[2]
# Deterministic objective (FGSM without a random start, the mixed loss): the two runs draw no random numbers, so
# they must agree. The model has no BatchNorm (per-rank batch statistics would differ from the global batch's).
SETTINGS = {"n": 80, "fit": dict(epochs=2, batch_size=20, optimizer="sgd", lr=0.2, momentum=0.9,
                                 schedule="cosine", seed=4)}


def objective_for(model):
    return rk.defenses.AdversarialTraining(rk.attacks.FGSM(model, eps=0.05), clean_weight=0.5)


def test_shards_are_disjoint_and_cover_the_global_batch():
    data = TensorDataset(torch.arange(80))
    ranks = [list(DistributedSampler(data, num_replicas=2, rank=r, shuffle=True, seed=4)) for r in range(2)]
    single = list(DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=4))
    assert not set(ranks[0]) & set(ranks[1])
    for step in range(4):     # global batch k of one process = the union of the ranks' local batches k
        union = set(ranks[0][step * 10:(step + 1) * 10]) | set(ranks[1][step * 10:(step + 1) * 10])
        assert union == set(single[step * 20:(step + 1) * 20])


@pytest.mark.slow   # two fresh processes import torch and join a gloo group: 20-100 s on a shared 2-core machine
def test_two_gloo_processes_equal_one_process(one_thread, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(REPO / "tests" / "training" / "_ddp_worker.py"), str(tmp_path / "ddp"), str(tmp_path / "report")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"report.{rank}").read_text()) for rank in range(2)]
    assert [r["world"] for r in reports] == [2, 2] and all(r["epochs"] == 2 for r in reports)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["checkpoint.pt", "history.json"]
    distributed = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert len(distributed["rng"]) == 2           # every rank's RNG state, for an exact resume

    model = tiny_model()
    fit(model, tiny_data(SETTINGS["n"]), objective_for(model), progress=False, **SETTINGS["fit"])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(distributed["model"][key], value, rtol=1e-5, atol=1e-6)
    # and training moved the weights well beyond that tolerance
    assert any((distributed["model"][k] - v).abs().max() > 1e-2 for k, v in tiny_model().state_dict().items())
