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


def test_fgs_minimal_eps_is_the_first_fooling_fgs_budget():
    import torch

    from robustkit.attacks import FGSM
    from robustkit.eval.eps_ref import fgs_minimal_eps

    model = small_model(3)
    x, _ = mnist_images(48)
    y = model(x).argmax(1).detach()
    y[:4] = (y[:4] + 1) % 10            # four misclassified clean: their budget is 0
    grid, refine = 50, 8
    step = 1.0 / grid
    eps = fgs_minimal_eps(model, x, y, high=1.0, grid=grid, refine=refine, batch_size=20)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert eps.dtype == torch.float64 and eps.shape == (48,)
    assert (eps[wrong] == 0).all() and (~wrong).any()
    # the grid scan with the attack itself: the first grid budget at which FGS fools each image
    first = torch.full((48,), float("inf"), dtype=torch.float64)
    for i in range(1, grid + 1):
        with torch.no_grad():
            hit = model(FGSM(model, eps=i * step)(x, y)).argmax(1) != y
        first = torch.where(hit & torch.isinf(first) & ~wrong, torch.tensor(i * step, dtype=torch.float64), first)
    assert torch.equal(torch.isinf(eps), torch.isinf(first) & ~wrong)
    ok = torch.isfinite(eps) & ~wrong
    assert ok.sum() >= 30
    # refined inside the grid cell below the first fooling grid budget, to within step / 2**refine
    assert (eps[ok] <= first[ok] + 1e-12).all() and (eps[ok] > first[ok] - step - 1e-12).all()
    for k in ok.nonzero().squeeze(1).tolist():
        xk, yk = x[k:k + 1], y[k:k + 1]
        with torch.no_grad():
            assert model(FGSM(model, eps=float(eps[k]))(xk, yk)).argmax(1) != yk
            below = float(eps[k]) - step / 2 ** refine - 1e-9
            if below > float(first[k]) - step:     # the bisection's lower end is a budget that does not fool
                assert model(FGSM(model, eps=below)(xk, yk)).argmax(1) == yk
    with pytest.raises(ValueError, match="grid"):
        fgs_minimal_eps(model, x, y, grid=0)
