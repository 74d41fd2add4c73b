"""FAB: the hyperplane-in-box projection against a bisection reference, and the attack's properties."""
from __future__ import annotations

import pytest
import torch

from robustkit.attacks.fab import FAB, project_onto_hyperplane_in_box
from tests.attacks._tiny import labelled_by, tiny_batch, tiny_cnn
from tests.reference.adaptive import naive_hyperplane_projection

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_matches_bisection_and_is_feasible(norm, seed):
    g = torch.Generator().manual_seed(seed)
    point = torch.rand(7, 30, generator=g, dtype=torch.float64)
    w = torch.randn(7, 30, generator=g, dtype=torch.float64)
    w[0, :10] = 0  # zero weights never move
    rhs = torch.randn(7, generator=g, dtype=torch.float64) * 2
    rhs[1] = 100.0  # out of the box's reach: the saturated move
    d = project_onto_hyperplane_in_box(point, w, rhs, norm)
    for i in range(7):
        ref = naive_hyperplane_projection(point[i], w[i], float(rhs[i]), norm)
        torch.testing.assert_close(d[i], ref, rtol=1e-7, atol=1e-9)
    moved = point + d
    assert float(moved.min()) >= -1e-12 and float(moved.max()) <= 1 + 1e-12
    reachable = torch.ones(7, dtype=torch.bool)
    reachable[1] = False
    torch.testing.assert_close((w * d).sum(1)[reachable], rhs[reachable], rtol=1e-9, atol=1e-9)


def test_projection_without_box_is_the_closed_form():
    """Far from the box edges the L2 projection is rhs w / ||w||^2 and the L-inf one rhs sign(w) / ||w||_1."""
    g = torch.Generator().manual_seed(5)
    point = torch.full((3, 20), 0.5, dtype=torch.float64)
    w = torch.randn(3, 20, generator=g, dtype=torch.float64)
    rhs = torch.tensor([0.01, -0.02, 0.005], dtype=torch.float64)
    d2 = project_onto_hyperplane_in_box(point, w, rhs, "l2")
    torch.testing.assert_close(d2, rhs.unsqueeze(1) * w / (w * w).sum(1, keepdim=True))
    dinf = project_onto_hyperplane_in_box(point, w, rhs, "linf")
    torch.testing.assert_close(dinf, rhs.unsqueeze(1) * w.sign() / w.abs().sum(1, keepdim=True))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_fab_finds_small_adversarials(norm):
    model = tiny_cnn(seed=0)
    x, y = tiny_batch(batch=8, seed=1)
    y = labelled_by(model, x)
    res = FAB(model, norm=norm, steps=30).run(x, y)
    assert res.success.float().mean() >= 0.75
    size = res.linf if norm == "linf" else res.l2
    torch.testing.assert_close(res.extras["norm"][res.success], size[res.success], rtol=1e-5, atol=1e-6)
    assert float(res.adv.min()) >= 0 and float(res.adv.max()) <= 1


def test_fab_t_with_eps_stops_once_within_budget_and_counts_misclassification():
    model = tiny_cnn(seed=2)
    x, y = tiny_batch(batch=8, seed=3)
    y = labelled_by(model, x)
    res = FAB(model, norm="linf", steps=30, target=3, eps=0.2).run(x, y)
    assert bool((res.logits.argmax(1)[res.success] != y[res.success]).all())
    assert bool((res.steps[res.linf <= 0.2] < 90).any())


@pytest.mark.parametrize("kwargs,message", [({"steps": 0}, "steps must be an int >= 1"),
                                            ({"alpha_max": 2.0}, "alpha_max must be a number"),
                                            ({"eta": 0.5}, "eta must be a number >= 1"),
                                            ({"restarts": 2}, "restarts > 1 draws random starts"),
                                            ({"target": 0}, "target must be None")])
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FAB(tiny_cnn(), **kwargs)
