"""The gradient attacks on a LeNet trained on real MNIST (256 correctly classified test images)."""
from __future__ import annotations

import pytest
import torch

from robustkit.attacks import DMIFGSM, IFGSM, MIFGSM, PGD


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lenet(request):
    """The shared ``mnist_lenet`` fixture of tests/conftest.py: (model, x, y)."""
    model, x, y = request.getfixturevalue("mnist_lenet")
    assert not model.training
    return model, x, y


def _random_targets(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (y + torch.randint(1, 10, y.shape, generator=g)) % 10


def test_untargeted_pgd_eps03_40_steps_succeeds_on_99_percent(lenet):
    model, x, y = lenet
    res = PGD(model, eps=0.3, step_size=0.01, steps=40, seed=0).run(x, y)
    assert res.success.float().mean() >= 0.99
    assert bool((res.linf <= 0.3 + 1e-6).all())


# Targeted MNIST attacks need room to correct: with the papers' α = ε / N (MI-FGSM, Algorithm 1) a white-box
# LeNet reaches a random target on about 85% of the images, with larger steps on about 95%.
@pytest.mark.parametrize("make, rate", [
    (lambda m: PGD(m, eps=0.3, step_size=0.01, steps=40, seed=0), 0.9),
    (lambda m: IFGSM(m, eps=0.3, steps=20, step_size=0.02), 0.9),
    (lambda m: MIFGSM(m, eps=0.3, steps=20, step_size=0.03), 0.9),
    (lambda m: DMIFGSM(m, eps=0.3, steps=20), 0.75),
], ids=["PGD", "IFGSM", "MIFGSM", "DMIFGSM"])
def test_targeted_attacks_reach_the_target(lenet, make, rate):
    model, x, y = lenet
    x, y = x[:128], y[:128]
    target = _random_targets(y)
    res = make(model).run(x, y, target=target)
    with torch.no_grad():
        reached = model(res.adv).argmax(1) == target
    assert torch.equal(res.success, reached)
    assert reached.float().mean() >= rate


def test_early_stop_robust_accuracy_equals_full_run_on_lenet(lenet):
    model, x, y = lenet
    x, y = x[:128], y[:128]
    kwargs = dict(eps=0.1, step_size=0.01, steps=20, random_start=False)
    full = PGD(model, **kwargs).run(x, y)
    early = PGD(model, early_stop=True, **kwargs).run(x, y)
    robust_full = 1 - full.success.float().mean()
    assert 0.05 < robust_full < 0.95, "eps=0.1 should leave some robust accuracy to compare"
    assert early.success.float().mean() == full.success.float().mean()
    assert early.steps.float().mean() < 20
