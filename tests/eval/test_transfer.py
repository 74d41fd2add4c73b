"""The transfer matrix over several sources (single models and an ensemble) against several targets."""
import json

import pytest
import torch

from robustkit.attacks import FGSM
from robustkit.eval.transfer import run_transfer
from robustkit.nn import Ensemble

from ._helpers import mnist_images, small_model


def test_transfer_matrix_equals_direct_attack_and_target_predictions(tmp_path):
    a, b, c = small_model(0), small_model(1), small_model(2)
    x, y = mnist_images(40)
    sources = {"a": a, "a+b": Ensemble([a, b])}
    targets = {"a": a, "c": c}

    def make_attack(model):
        return FGSM(model, eps=0.2)

    matrix = run_transfer(sources, targets, (x, y), make_attack, out=tmp_path, batch_size=40, progress=False)
    assert matrix["sources"] == ["a", "a+b"] and matrix["targets"] == ["a", "c"]
    assert json.loads((tmp_path / "transfer.json").read_text())["matrix"] == matrix["matrix"]
    assert (tmp_path / "transfer.png").stat().st_size > 1000
    for i, (name, source) in enumerate(sources.items()):
        adv = make_attack(source).run(x, y).adv   # deterministic
        with torch.no_grad():
            for j, target in enumerate(targets.values()):
                correct = target(x).argmax(1) == y
                fooled = target(adv).argmax(1) != y
                assert matrix["matrix"][i][j] == pytest.approx(fooled[correct].double().mean().item())
