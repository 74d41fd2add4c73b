"""Carlini-Wagner L2: equal to the naive per-sample implementation of Carlini's algorithm on small inputs;
on the trained MNIST LeNet: >= 99% success with median L2 no larger than DeepFool's, targets reached,
the box holds; errors."""
import pytest
import torch
from torch import nn

from robustkit.attacks import CW, DeepFool
from tests.reference.minnorm import cw_l0_one, cw_l2_one, cw_linf_one


# One intra-op thread: on the shared 2-core machine thread hand-offs cost more than these small batches.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = 0.25 + 0.5 * torch.rand(6, 3, 2, 2, generator=g)
    with torch.no_grad():
        logits = model(x)
    return model, x, logits.argmax(dim=1), logits.argsort(dim=1)[:, -2]


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("abort", [dict(abort_early=True), dict(abort_early=False),
                                   dict(abort_early=True, abort_checks=20, abort_tol=2e-3, warm_start=True)])
def test_matches_naive_reference(tiny, targeted, abort):
    model, x, y, second = tiny
    kw = dict(binary_search_steps=4, steps=40, lr=0.1, initial_const=1.0, **abort)
    target = second if targeted else None
    res = CW(model, **kw).run(x, y, target=target)
    found = 0
    for i in range(x.shape[0]):
        label = int(second[i]) if targeted else int(y[i])
        adv, l2sq = cw_l2_one(model, x[i], label, targeted=targeted, **kw)
        torch.testing.assert_close(res.adv[i], adv, rtol=0, atol=1e-5)
        if l2sq < float("inf"):
            found += 1
            torch.testing.assert_close(res.extras["best_l2"][i] ** 2, torch.tensor(l2sq), rtol=1e-4, atol=1e-6)
        else:
            assert res.extras["best_l2"][i] == float("inf")
    assert found >= 4  # the comparison is about found examples, not only failures


@pytest.mark.parametrize("targeted", [False, True])
def test_linf_matches_naive_reference(tiny, targeted):
    model, x, y, second = tiny
    model, x, y, second = model.double(), x[:4].double(), y[:4], second[:4]
    kw = dict(steps=20, lr=0.05, initial_const=0.1)
    res = CW(model, norm="linf", **kw).run(x, y, target=second if targeted else None)
    found = 0
    for i in range(x.shape[0]):
        label = int(second[i]) if targeted else int(y[i])
        adv, used, linf = cw_linf_one(model, x[i], label, targeted=targeted, **kw)
        torch.testing.assert_close(res.adv[i], adv, rtol=0, atol=1e-9)
        assert res.steps[i].item() == used
        assert res.extras["best_linf"][i].item() == pytest.approx(linf, rel=1e-9)
        found += linf < float("inf")
    assert found >= 3 and int(res.steps.max()) > 2 * kw["steps"]  # found examples, after several attempts


@pytest.mark.parametrize("warm_start", [False, True])
def test_l0_matches_naive_reference(tiny, warm_start):
    model, x, y, _ = tiny
    model, x, y = model.double(), x[:4].double(), y[:4]
    kw = dict(binary_search_steps=3, steps=30, lr=0.05, initial_const=0.1, warm_start=warm_start)
    res = CW(model, norm="l0", **kw).run(x, y)
    for i in range(x.shape[0]):
        adv, used, pixels = cw_l0_one(model, x[i], int(y[i]), **kw)
        torch.testing.assert_close(res.adv[i], adv, rtol=0, atol=1e-9)
        assert res.steps[i].item() == used
        assert res.extras["best_l0"][i].item() == pixels
    assert bool(res.success.all()) and bool((res.extras["best_l0"] < 4).any())  # some pixels were frozen


def test_mnist_lenet_fast_beats_deepfool(mnist_lenet):
    model, x, y = mnist_lenet
    x, y = x[:32], y[:32]
    params = [p.clone() for p in model.parameters()]
    res = CW.fast(model).run(x, y)
    deepfool = DeepFool(model).run(x, y)
    assert res.success.float().mean() >= 0.99
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert res.l2[res.success].median() <= deepfool.l2.median()
    torch.testing.assert_close(res.extras["best_l2"][res.success], res.l2[res.success], rtol=1e-4, atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))


def test_mnist_lenet_targeted(mnist_lenet):
    model, x, y = mnist_lenet
    x, y = x[:12], y[:12]
    res = CW.fast(model).run(x, y, target="least_likely")
    assert (res.logits.argmax(dim=1) == res.target).float().mean() >= 0.95
    assert res.adv.min() >= 0 and res.adv.max() <= 1


def test_confidence_margin_holds(tiny):
    model, x, y, _ = tiny
    res = CW(model, binary_search_steps=4, steps=60, lr=0.1, initial_const=1.0, confidence=0.5).run(x, y)
    found = torch.isfinite(res.extras["best_l2"])
    assert found.any()
    z = res.logits[found]
    real = z.gather(1, y[found].unsqueeze(1)).squeeze(1)
    other = z.scatter(1, y[found].unsqueeze(1), float("-inf")).amax(dim=1)
    assert (other - real > 0.5 - 1e-4).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(norm="l1"), "norm must be one of"), (dict(steps=0), "steps must be an int >= 1"),
    (dict(binary_search_steps=0), "binary_search_steps must be an int >= 1"), (dict(lr=0.0), "lr must be"),
    (dict(confidence=-1.0), "confidence must be"), (dict(initial_const=float("inf")), "initial_const must be"),
    (dict(abort_checks=0), "abort_checks must be an int >= 1"), (dict(abort_tol=1.0), "abort_tol must be"),
    (dict(abort_tol=-0.1), "abort_tol must be"),
])
def test_bad_arguments(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CW(tiny[0], **kwargs)
    with pytest.raises(TypeError, match="warm_start must be a bool"):
        CW(tiny[0], warm_start=1)


def test_linf_and_l0_each_win_in_their_own_norm(tiny):
    """C&W L-inf (tau schedule) and L0 (pixel elimination) find perturbations no worse in their norm than
    the L2 attack's, and at least as sparse / as flat on most samples."""
    model, x, y, _ = tiny
    x, y = x[:4], y[:4]
    l2 = CW(model, binary_search_steps=4, steps=60, lr=0.05, initial_const=0.1).run(x, y)
    linf = CW(model, norm="linf", steps=100, lr=0.05, initial_const=0.1).run(x, y)
    l0 = CW(model, norm="l0", binary_search_steps=4, steps=60, lr=0.05, initial_const=0.1).run(x, y)
    assert l2.success.all() and linf.success.all() and l0.success.all()
    for res in (linf, l0):
        assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert (linf.linf <= l2.linf + 1e-6).all() and (linf.linf < l2.linf).any()
    pixels_l2 = ((l2.adv - x).abs() > 1e-4).flatten(2).any(dim=1).sum(dim=1)
    assert (l0.extras["best_l0"] <= pixels_l2).all() and (l0.extras["best_l0"] < pixels_l2).any()
    torch.testing.assert_close(linf.extras["best_linf"], linf.linf)


def test_l0_with_warm_start(tiny):
    """The L0 attack on top of warm-started L2 rounds: its frozen pixels stay clean, and it stays sparser."""
    model, x, y, _ = tiny
    x, y = x[:4], y[:4]
    kw = dict(binary_search_steps=4, steps=60, lr=0.05, initial_const=0.1)
    cold = CW(model, norm="l2", **kw).run(x, y)
    l0 = CW(model, norm="l0", warm_start=True, **kw).run(x, y)
    assert l0.success.all() and l0.adv.min() >= 0 and l0.adv.max() <= 1
    changed = ((l0.adv - x).abs() > 1e-4).flatten(2).any(dim=1).sum(dim=1)
    assert (changed == l0.extras["best_l0"]).all()
    pixels_l2 = ((cold.adv - x).abs() > 1e-4).flatten(2).any(dim=1).sum(dim=1)
    assert (changed <= pixels_l2).all() and (changed < pixels_l2).any()
