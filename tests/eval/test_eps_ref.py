"""Deep Defense's FGS eps_ref by bisection, checked against a fine scan of FGS budgets."""
import pytest

from robustkit.eval.eps_ref import fgs_accuracy, fgs_eps_ref

from ._helpers import mnist_images, small_model


def test_fgs_eps_ref_matches_a_fine_grid_scan():
    model = small_model(3)
    x, _ = mnist_images(64)
    y = model(x).argmax(1).detach()     # the model's own labels: every image is correct clean, error starts at 0
    table = fgs_eps_ref(model, x, y, high=1.0, tol=1e-3)
    eps_ref = table["eps_ref"]
    step = 2e-3
    first_crossing = next(i * step for i in range(1, 501) if fgs_accuracy(model, x, y, i * step) <= 0.5)
    assert abs(eps_ref - first_crossing) <= step + 1e-3
    assert fgs_accuracy(model, x, y, eps_ref) <= 0.5
    assert table["accuracy"]["1.0"] == pytest.approx(fgs_accuracy(model, x, y, eps_ref))
    assert table["accuracy"]["0.2"] == pytest.approx(fgs_accuracy(model, x, y, 0.2 * eps_ref))
    # a budget fixed elsewhere (Deep Defense compares every model at the regularised model's eps_ref)
    fixed = fgs_eps_ref(model, x, y, reference=0.05)
    assert fixed["eps_ref"] == 0.05
    assert fixed["accuracy"]["0.5"] == pytest.approx(fgs_accuracy(model, x, y, 0.025))
