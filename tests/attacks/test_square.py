"""Square: the constraints, the p schedule, and success where gradients are masked (an input-rounding model)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.attacks.apgd import APGD
from robustkit.attacks.square import Square, pseudo_gaussian, square_fraction
from tests.attacks._tiny import labelled_by, tiny_batch, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


class RoundInput(nn.Module):
    """``model(round(x * levels) / levels)``: exact forward, zero input gradient almost everywhere."""

    def __init__(self, model: nn.Module, levels: int = 4):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


def test_schedule_halves_p_at_the_papers_iterations():
    assert square_fraction(0.8, 10, 10000) == 0.8
    assert square_fraction(0.8, 11, 10000) == 0.4
    assert square_fraction(0.8, 51, 10000) == 0.2
    assert square_fraction(0.8, 9999, 10000) == 0.8 / 512
    assert square_fraction(0.8, 6, 5000) == 0.4  # rescaled: iteration 6 of 5000 is 12 of 10000


def test_pseudo_gaussian_has_unit_norm_and_peaks_in_the_centre():
    p = pseudo_gaussian(5, torch.float64, "cpu")
    assert abs(float(p.norm()) - 1) < 1e-12
    assert p[2, 2] == p.max() and p[0, 0] == p.min()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_constraints_and_queries(norm, eps):
    model = tiny_cnn(seed=0)
    x, _ = tiny_batch(batch=8, seed=1)
    y = labelled_by(model, x)
    res = Square(model, eps=eps, norm=norm, queries=200).run(x, y)
    size = res.linf if norm == "linf" else res.l2
    assert bool((size <= eps + 1e-5).all())
    assert float(res.adv.min()) >= 0 and float(res.adv.max()) <= 1
    assert bool((res.steps <= 200).all()) and bool((res.steps >= 1).all())
    # a broken sample stops querying
    assert bool((res.steps[res.success] < 200).all())


def test_targeted_square_reaches_the_target():
    model = tiny_cnn(seed=1)
    x, y = tiny_batch(batch=6, seed=2)
    y = labelled_by(model, x)
    t = (y + 2) % 10
    res = Square(model, eps=0.3, queries=300).run(x, y, target=t)
    assert res.success.any()
    assert bool((res.logits.argmax(1)[res.success] == t[res.success]).all())


@pytest.mark.parametrize("kwargs,message", [({"queries": 0}, "queries must be an int >= 1"),
                                            ({"p_init": 0.0}, r"p_init must be a number in \(0, 1\]"),
                                            ({"p_init": 1.5}, r"p_init must be a number in \(0, 1\]"),
                                            ({"restarts": 0}, "restarts must be an int >= 1")])
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Square(tiny_cnn(), eps=0.1, **kwargs)


@pytest.mark.slow
def test_square_breaks_an_input_rounding_model_where_gradient_attacks_fail(mnist_lenet):
    model, x, y = mnist_lenet
    masked = RoundInput(model).eval()
    x, y = x[:48], y[:48]
    with torch.no_grad():
        keep = masked(x).argmax(1) == y
    x, y = x[keep], y[keep]
    grad_acc = 1 - APGD(masked, eps=0.3, steps=40).run(x, y).success.float().mean()
    square_acc = 1 - Square(masked, eps=0.3, queries=500).run(x, y).success.float().mean()
    assert grad_acc >= 0.9, float(grad_acc)            # the zero gradient stops APGD
    assert square_acc <= grad_acc - 0.5, (float(square_acc), float(grad_acc))
