"""AutoAttack: the suites, each attack on the samples still robust, and the budget."""
from __future__ import annotations

import pytest
import torch

from robustkit.attacks import APGD, AutoAttack
from tests._tiny import labelled_by, tiny_batch, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(seed=0, batch=16):
    model = tiny_cnn(seed=seed)
    x, _ = tiny_batch(batch=batch, seed=seed + 1)
    y = labelled_by(model, x)
    y[0] = (y[0] + 1) % 10  # one sample misclassified clean
    return model, x, y


def test_suites():
    model = tiny_cnn()
    assert AutoAttack(model, eps=0.1).stage_names == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert AutoAttack(model, eps=0.1, version="rand").stage_names == ["apgd-ce", "apgd-dlr"]
    assert all(a.eot == 20 for _, a in AutoAttack(model, eps=0.1, version="rand").attacks)
    assert AutoAttack(model, eps=0.1, version="fast").stage_names == ["apgd-ce", "apgd-t"]
    with pytest.raises(ValueError, match="version must be one of"):
        AutoAttack(model, eps=0.1, version="plus")
    with pytest.raises(ValueError, match="untargeted only"):
        x, y = tiny_batch(batch=2)
        AutoAttack(model, eps=0.1).run(x, y, target=(y + 1) % 10)


def test_fast_suite_breaks_what_apgd_ce_breaks_and_stays_in_budget():
    model, x, y = _setup(seed=2)
    res = AutoAttack(model, eps=0.02, version="fast").run(x, y)
    alone = APGD(model, eps=0.02).run(x, y)
    assert res.success.sum() >= alone.success.sum()
    assert bool((res.linf <= 0.02 + 1e-6).all())
    assert torch.equal(res.success, res.extras["stage"] >= 0)


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("linf", 0.02), ("l2", 0.15)])
def test_standard_is_at_least_as_strong_as_apgd_ce_and_respects_the_budget(norm, eps):
    model, x, y = _setup()
    atk = AutoAttack(model, eps=eps, norm=norm)
    res = atk.run(x, y)
    stage = res.extras["stage"]
    assert int(stage[0]) == 0
    assert torch.equal(res.success, stage >= 0)
    size = res.linf if norm == "linf" else res.l2
    assert bool((size <= eps + 1e-5).all())
    alone = APGD(model, eps=eps, norm=norm).run(x, y)
    assert res.success.sum() >= alone.success.sum()
    counts = atk.last_counts
    assert counts[0] == 15 and all(a >= b for a, b in zip(counts, counts[1:]))
    assert counts[-1] == int((~res.success).sum())
    assert (stage > 0).any() and (stage < 0).any(), "the test needs both broken and robust samples"
    robust = stage < 0  # not the clean image: the lowest-margin point the suite found
    assert bool((res.adv[robust] != x[robust]).flatten(1).any(1).all())


def _margin(model, x, y, draws=1):
    with torch.no_grad():
        z = torch.stack([model(x) for _ in range(draws)]).mean(0)
    return z.gather(1, y.unsqueeze(1)).squeeze(1) - z.scatter(1, y.unsqueeze(1), float("-inf")).amax(1)


def test_unbroken_samples_get_their_lowest_margin_point_not_the_clean_image():
    model, x, y = _setup(seed=2)
    res = AutoAttack(model, eps=0.02, version="fast").run(x, y)
    robust = res.extras["stage"] < 0
    assert robust.sum() >= 3, "the test needs robust samples"
    assert torch.equal(res.success, ~robust)
    assert bool((res.linf <= 0.02 + 1e-6).all())
    clean_margin, adv_margin = _margin(model, x, y), _margin(model, res.adv, y)
    assert bool((adv_margin[robust] <= clean_margin[robust]).all())
    assert bool((res.adv[robust] != x[robust]).flatten(1).any(1).all())  # not the clean images


class _RowNoise(torch.nn.Module):
    def __init__(self, model, sigma):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn_like(x))


@pytest.mark.slow
def test_rand_is_no_weaker_than_apgd_with_eot_on_a_randomized_model():
    base, x, y = _setup(seed=2, batch=24)
    model = _RowNoise(base, 0.05)
    torch.manual_seed(0)
    res = AutoAttack(model, eps=0.02, version="rand").run(x, y)
    torch.manual_seed(0)
    alone = APGD(model, eps=0.02, eot=20)(x, y)
    torch.manual_seed(1)
    robust = res.extras["stage"] < 0
    assert robust.any() and (~robust).any()
    assert torch.equal(res.success, ~robust)  # judged on the mean logits of 20 draws
    # an estimate from 20 draws may rank the clean image lowest; most robust samples get an attack's point
    assert float((res.adv[robust] != x[robust]).flatten(1).any(1).float().mean()) >= 0.75

    def accuracy(images):
        with torch.no_grad():
            return float(torch.stack([(model(images).argmax(1) == y).float() for _ in range(64)]).mean())

    acc_aa, acc_apgd, acc_clean = accuracy(res.adv), accuracy(alone), accuracy(x)
    print(f"expected accuracy: clean {acc_clean:.3f}, APGD-CE EOT-20 {acc_apgd:.3f}, AutoAttack rand {acc_aa:.3f}")
    assert acc_aa <= acc_apgd + 0.01
