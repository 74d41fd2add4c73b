"""Parseval retraction (Cisse et al. Eq. 4) against an entry-by-entry float64 version, its fixed point, its effect on
the singular values, parseval_tightness, argument errors, and a short MNIST run (slow)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.defenses import Parseval, parseval_tightness
from tests.reference.defenses import naive_parseval_step, naive_tightness


def sampled_rows(seed, num_rows, fraction):
    """The rows the constraint draws from a generator seeded with ``seed``."""
    count = max(1, int(round(fraction * num_rows)))
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))[:count]


def layers():
    torch.manual_seed(0)
    return {"linear": nn.Linear(9, 6).double(), "conv": nn.Conv2d(2, 5, 3).double()}


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 1.0])
def test_retraction_equals_naive_float64(kind, fraction, one_thread):
    layer = layers()[kind]
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1).clone()
    bias = layer.bias.detach().clone()
    Parseval(beta=0.05, fraction=fraction, generator=torch.Generator().manual_seed(4))(layer)
    rows = sampled_rows(4, w.shape[0], fraction) if fraction < 1 else torch.arange(w.shape[0])
    want = naive_parseval_step(w, rows, 0.05)
    torch.testing.assert_close(layer.weight.detach().reshape(w.shape), want, rtol=1e-12, atol=1e-14)
    assert torch.equal(layer.bias.detach(), bias)                              # only weights move


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_retraction_moves_w_wt_toward_identity(kind, one_thread):
    """From a random matrix, repeated steps with every row shrink ||W Wᵀ − I|| monotonically, as the step's
    fixed point σ = 1 predicts; with 30 % of the rows it still falls."""
    layer = layers()[kind]
    scale = 0.6 if kind == "linear" else 0.9
    with torch.no_grad():
        layer.weight.mul_(scale / layer.weight.reshape(layer.weight.shape[0], -1).norm(dim=1, keepdim=True)
                          .view(-1, *([1] * (layer.weight.dim() - 1))))
    name = next(iter(parseval_tightness(layer)))
    history = [parseval_tightness(layer)[name]]
    full = Parseval(beta=0.2, fraction=1.0)
    for _ in range(20):
        full(layer)
        history.append(parseval_tightness(layer)[name])
    assert all(b < a for a, b in zip(history, history[1:])), history
    assert history[-1] < 0.05 * history[0]

    fresh = layers()[kind]
    before = sum(parseval_tightness(fresh).values())
    partial = Parseval(beta=0.05, fraction=0.3, generator=torch.Generator().manual_seed(0))
    for _ in range(30):
        partial(fresh)
    assert sum(parseval_tightness(fresh).values()) < before


def test_singular_values_follow_the_scalar_map(one_thread):
    """With every row, W = U diag(σ) Vᵀ goes to U diag((1 + β) σ − β σ³) Vᵀ."""
    torch.manual_seed(1)
    layer = nn.Linear(7, 4, bias=False).double()
    sigma = torch.linalg.svdvals(layer.weight.detach())
    Parseval(beta=0.1, fraction=1.0)(layer)
    torch.testing.assert_close(torch.linalg.svdvals(layer.weight.detach()),
                               ((1.1) * sigma - 0.1 * sigma ** 3).sort(descending=True).values, rtol=1e-12, atol=1e-14)


def test_a_tight_frame_is_a_fixed_point(one_thread):
    torch.manual_seed(2)
    layer = nn.Linear(8, 3, bias=False).double()
    q, _ = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64))
    with torch.no_grad():
        layer.weight.copy_(q.t())                                            # orthonormal rows: W Wᵀ = I
    before = layer.weight.detach().clone()
    Parseval(beta=0.3, fraction=0.5, generator=torch.Generator().manual_seed(0))(layer)
    torch.testing.assert_close(layer.weight.detach(), before, rtol=0, atol=1e-14)
    assert parseval_tightness(layer)[""] < 1e-12


def test_tightness_equals_naive_and_covers_linear_and_conv(one_thread):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4, 3), nn.BatchNorm1d(3))
    got = parseval_tightness(model)
    assert sorted(got) == ["0", "3"]                                         # batch norm is not constrained
    torch.testing.assert_close(got["0"], naive_tightness(model[0].weight.detach().reshape(4, -1)), rtol=1e-12, atol=0)
    torch.testing.assert_close(got["3"], naive_tightness(model[3].weight.detach()), rtol=1e-12, atol=0)


def test_non_contiguous_weight_is_written_back(one_thread):
    torch.manual_seed(5)
    layer = nn.Linear(6, 4, bias=False).double()
    with torch.no_grad():
        layer.weight = nn.Parameter(torch.randn(6, 4, dtype=torch.float64).t())    # a transposed view
    assert not layer.weight.is_contiguous()
    w = layer.weight.detach().clone()
    Parseval(beta=0.05, fraction=0.5, generator=torch.Generator().manual_seed(1))(layer)
    want = naive_parseval_step(w, sampled_rows(1, 4, 0.5), 0.05)
    torch.testing.assert_close(layer.weight.detach(), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs, message", [
    (dict(beta=0), "beta must be a finite number > 0"),
    (dict(beta=-1e-4), "beta must be a finite number > 0"),
    (dict(beta=float("inf")), "beta must be a finite number > 0"),
    (dict(fraction=0), r"fraction must be a number in \(0, 1\]"),
    (dict(fraction=1.5), r"fraction must be a number in \(0, 1\]"),
    (dict(fraction=-0.3), r"fraction must be a number in \(0, 1\]"),
    (dict(fraction=True), r"fraction must be a number in \(0, 1\]"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match="Parseval: " + message):
        Parseval(**kwargs)


@pytest.mark.slow
def test_on_mnist_parseval_training_lowers_tightness(shared_data):
    """The same short training run with and without the constraint: every constrained LeNet layer ends tighter."""
    from robustkit.datasets import mnist
    from robustkit.models import LeNet

    x_train, y_train = mnist("train").tensors
    tightness = {}
    for name, constraints in (("plain", []), ("parseval", [Parseval(beta=3e-3, fraction=0.3)])):
        torch.manual_seed(0)
        model = LeNet()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for step in range(150):
            idx = slice(step * 64, (step + 1) * 64)
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            for constraint in constraints:
                constraint(model)
        tightness[name] = parseval_tightness(model)
    assert all(tightness["parseval"][k] < tightness["plain"][k] for k in tightness["plain"]), tightness
