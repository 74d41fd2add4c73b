"""robustkit.nn: Normalize and Ensemble, against hand-written formulas."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import robustkit
from robustkit.nn import Ensemble, Normalize


def _linear(seed: int, d: int = 5, c: int = 3, dtype=torch.float64) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = nn.Linear(d, c).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return m


# ---- Normalize ------------------------------------------------------------------------------------------
def test_normalize_matches_per_channel_formula():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    out = Normalize(mean, std)(x)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - mean[c]) / std[c], rtol=0, atol=1e-6)
    assert out.dtype == torch.float64


def test_normalize_persistent_flag_controls_state_dict():
    assert set(Normalize((0.5,), (0.5,)).state_dict()) == {"mean", "std"}
    fixed = Normalize((0.5,), (0.5,), persistent=False)
    assert fixed.state_dict() == {}
    # still buffers: they follow .to() and appear in named_buffers
    assert {n for n, _ in fixed.named_buffers()} == {"mean", "std"}
    assert fixed.to(torch.float64).mean.dtype == torch.float64


def test_normalize_and_ensemble_are_importable_from_the_package_and_attacks():
    from robustkit.attacks import Ensemble as attacks_ensemble
    from robustkit.attacks import Normalize as attacks_normalize

    assert attacks_normalize is Normalize and robustkit.Normalize is Normalize
    assert attacks_ensemble is Ensemble and robustkit.Ensemble is Ensemble


@pytest.mark.parametrize("mean, std, match", [
    ((0.1, 0.2), (0.3,), "mean and std"),
    ((0.1,), (0.0,), "std must be"),
    ((0.1,), (-1.0,), "std must be"),
    ((0.1,), (float("nan"),), "std must be"),
    ((float("inf"),), (1.0,), "mean must be"),
])
def test_normalize_rejects_bad_arguments(mean, std, match):
    with pytest.raises(ValueError, match=match):
        Normalize(mean, std)


def test_normalize_rejects_non_bool_persistent():
    with pytest.raises(TypeError, match="persistent"):
        Normalize((0.5,), (0.5,), persistent="no")


# ---- Ensemble -------------------------------------------------------------------------------------------
def test_ensemble_forward_is_the_mean_of_member_logits():
    a, b, c = _linear(0), _linear(1), _linear(2)
    x = torch.randn(4, 5, dtype=torch.float64)
    ens = Ensemble([a, b, c])
    torch.testing.assert_close(ens(x), (a(x) + b(x) + c(x)) / 3, rtol=1e-12, atol=1e-12)
    assert list(ens.members) == [a, b, c] and len(ens) == 3


def test_ensemble_weighted_mean():
    a, b = _linear(0), _linear(1)
    x = torch.randn(4, 5, dtype=torch.float64)
    ens = Ensemble([a, b], weights=[3.0, 1.0])
    torch.testing.assert_close(ens(x), 0.75 * a(x) + 0.25 * b(x), rtol=1e-12, atol=1e-12)
    # zero weight drops a member
    torch.testing.assert_close(Ensemble([a, b], weights=[0, 2])(x), b(x), rtol=1e-12, atol=1e-12)


def test_ensemble_of_one_is_the_member():
    a = _linear(0)
    x = torch.randn(4, 5, dtype=torch.float64)
    assert torch.equal(Ensemble([a])(x), a(x))


def test_ensemble_is_differentiable_and_registers_members():
    a, b = _linear(0), _linear(1)
    ens = Ensemble([a, b], weights=[1.0, 2.0])
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ens, (x,))
    assert len(list(ens.parameters())) == 4
    assert set(ens.state_dict()) == {"members.0.weight", "members.0.bias", "members.1.weight", "members.1.bias"}
    ens.train(False)
    assert not a.training and not b.training


def test_ensemble_combine_checks_the_count():
    ens = Ensemble([_linear(0), _linear(1)])
    with pytest.raises(ValueError, match="expected 2 logit tensors, got 1"):
        ens.combine([torch.zeros(2, 3)])


@pytest.mark.parametrize("models, weights, exc, match", [
    ([], None, ValueError, "must not be empty"),
    (None, None, TypeError, "models must be a list"),
    ("lin", None, TypeError, "models must be a list"),
    ([object()], None, TypeError, r"models\[0\] must be an nn.Module"),
    (["lin", "lin"], [1.0], ValueError, "one entry per model"),
    (["lin", "lin"], [1.0, -1.0], ValueError, r"weights\[1\] must be a finite number >= 0"),
    (["lin", "lin"], [1.0, float("nan")], ValueError, r"weights\[1\]"),
    (["lin", "lin"], [0.0, 0.0], ValueError, "positive sum"),
])
def test_ensemble_rejects_bad_arguments(models, weights, exc, match):
    lin = _linear(0)
    if isinstance(models, list):
        models = [lin if m == "lin" else m for m in models]
    elif models == "lin":
        models = lin
    with pytest.raises(exc, match=match):
        Ensemble(models, weights=weights)
