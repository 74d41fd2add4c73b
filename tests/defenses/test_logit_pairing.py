"""LogitPairing (ALP, CLP, logit squeezing) against the naive float64 objective of tests/reference/defenses.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.attacks import FGSM
from robustkit.defenses import LogitPairing
from robustkit.defenses.logit_pairing import random_pairs
from tests.reference.defenses import naive_logit_pairing


def tiny_model(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, classes)).double()


def shifted(x, y):
    """A deterministic stand-in attack: a fixed pattern added and clipped to the box."""
    pattern = torch.linspace(-0.2, 0.2, x[0].numel(), dtype=x.dtype).view_as(x[0])
    return (x + pattern).clamp(0, 1)


def batch(m=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, 1, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 5, (m,), generator=g)


def same_pairs(seed, m):
    """The pairing the objective draws from a generator seeded with ``seed``: a random permutation in halves."""
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed))
    return perm[:m // 2], perm[m // 2:2 * (m // 2)]


CASES = [
    dict(attack=True, adversarial=0.7, clean=0.0, squeeze=0.0, clean_weight=0.5),      # ALP
    dict(attack=True, adversarial=0.7, clean=0.3, squeeze=0.05, clean_weight=0.2),     # all three with an attack
    dict(attack=True, adversarial=0.0, clean=0.0, squeeze=0.0, clean_weight=0.0),      # plain adversarial training
    dict(attack=False, adversarial=0.0, clean=0.4, squeeze=0.0, clean_weight=None),    # clean-only CLP
    dict(attack=False, adversarial=0.0, clean=0.0, squeeze=0.2, clean_weight=None),    # clean-only squeezing
    dict(attack=False, adversarial=0.0, clean=0.5, squeeze=0.1, clean_weight=None),    # CLP + squeezing
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("m", [6, 7])
def test_loss_and_gradient_equal_naive_float64(case, m, one_thread):
    x, y = batch(m)
    model = tiny_model()
    attack = shifted if case["attack"] else None
    objective = LogitPairing(attack, adversarial=case["adversarial"], clean=case["clean"], squeeze=case["squeeze"],
                             clean_weight=case["clean_weight"], generator=torch.Generator().manual_seed(3))
    out = objective(model, x, y)
    grads = torch.autograd.grad(out.loss, list(model.parameters()))

    clean_logits = model(x)
    adv_logits = model(shifted(x, y)) if attack else None
    expected = naive_logit_pairing(clean_logits, adv_logits, y, adversarial=case["adversarial"], clean=case["clean"],
                                   squeeze=case["squeeze"], clean_weight=0.5 if case["clean_weight"] is None else case["clean_weight"],
                                   pairs=same_pairs(3, m))
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # logits of the training input: the adversarial ones with an attack, else the clean ones
    torch.testing.assert_close(out.logits, adv_logits if attack else clean_logits)


def test_metrics_are_the_unweighted_terms(one_thread):
    x, y = batch(8)
    model = tiny_model()
    out = LogitPairing(shifted, adversarial=2.0, clean=3.0, squeeze=4.0,
                       generator=torch.Generator().manual_seed(0))(model, x, y)
    z, za = model(x).detach(), model(shifted(x, y)).detach()
    torch.testing.assert_close(out.metrics["alp"], (z - za).pow(2).sum(1).mean())
    torch.testing.assert_close(out.metrics["squeeze"], z.pow(2).sum(1).mean())
    first, second = same_pairs(0, 8)
    torch.testing.assert_close(out.metrics["clp"], (z[first] - z[second]).pow(2).sum(1).mean())
    assert all(not torch.is_tensor(v) or not v.requires_grad for v in out.metrics.values())


def test_random_pairs_are_disjoint_and_vary():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(5):
        first, second = random_pairs(9, generator=g)
        assert len(first) == len(second) == 4
        assert len(set(first.tolist()) | set(second.tolist())) == 8          # one image sits out
        seen.add(tuple(first.tolist()))
    assert len(seen) > 1


def test_batch_of_one_has_no_pairs(one_thread):
    x, y = batch(1)
    out = LogitPairing(None, clean=1.0)(tiny_model(), x, y)
    assert float(out.metrics["clp"]) == 0.0
    out.loss.backward()


def test_with_a_robustkit_attack_the_model_keeps_its_mode_and_grads(one_thread):
    x, y = batch(6)
    model = tiny_model().float()
    model.train()
    attack = FGSM(model, eps=0.1)
    out = LogitPairing(attack, adversarial=0.5)(model, x.float(), y)
    assert model.training
    assert all(p.grad is None for p in model.parameters())                   # the attack wrote no .grad
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert float(out.metrics["alp"]) > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(adversarial=-0.1), "adversarial must be a finite number >= 0"),
    (dict(clean=-1.0), "clean must be a finite number >= 0"),
    (dict(squeeze=float("nan")), "squeeze must be a finite number >= 0"),
    (dict(adversarial=True), "adversarial must be a finite number >= 0"),
    (dict(clean_weight=1.5), "clean_weight must be a number in [0, 1]"),
    (dict(attack_mode="bogus"), "attack_mode must be one of"),
])
def test_bad_hyperparameters_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        LogitPairing(shifted, **kwargs)


def test_alp_needs_an_attack_and_clean_weight_needs_one():
    with pytest.raises(ValueError, match="adversarial .ALP. needs an attack"):
        LogitPairing(None, adversarial=0.5)
    with pytest.raises(ValueError, match="clean_weight applies only with an attack"):
        LogitPairing(None, clean=0.5, clean_weight=0.5)
    with pytest.raises(TypeError, match="attack must be an attack"):
        LogitPairing(3)


def test_an_attack_bound_to_another_model_is_refused():
    x, y = batch(4)
    other = tiny_model(seed=5).float()
    with pytest.raises(ValueError, match="attack is bound to another model"):
        LogitPairing(FGSM(other, eps=0.1), adversarial=1.0)(tiny_model().float(), x.float(), y)


def test_images_outside_the_box_are_refused():
    x, y = batch(4)
    with pytest.raises(ValueError, match="x must hold pixel values in"):
        LogitPairing(None, clean=1.0)(tiny_model(), x + 2, y)


@pytest.mark.slow
def test_on_mnist_alp_shrinks_the_clean_adversarial_logit_distance(shared_data):
    """A short run of ALP against the same adversarial training without the pairing term: the trained network's
    clean and adversarial logits are closer together (what Kannan et al.'s term asks for)."""
    from robustkit.datasets import mnist
    from robustkit.models import LeNet

    x_train, y_train = mnist("train").tensors
    x_test, y_test = mnist("test")[:500]
    distances = {}
    for name, weight in (("adv_train", 0.0), ("alp", 1.0)):
        torch.manual_seed(0)
        model = LeNet()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        objective = LogitPairing(FGSM(model, eps=0.2), adversarial=weight)
        model.train()
        for step in range(150):
            idx = slice(step * 64, (step + 1) * 64)
            out = objective(model, x_train[idx], y_train[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        model.eval()
        x_adv = FGSM(model, eps=0.2)(x_test, y_test)
        with torch.no_grad():
            distances[name] = float((model(x_test) - model(x_adv)).norm(dim=1).mean())
    assert distances["alp"] < 0.7 * distances["adv_train"], distances
