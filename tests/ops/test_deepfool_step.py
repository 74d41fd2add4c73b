"""robustkit.ops.deepfool_step beyond the op-test harness (test_opinfo.py: spec, naive, layouts, gradcheck,
opcheck, compile): the linearised-boundary property, zero gradients, empty gradient rows, errors."""
import re

import pytest
import torch

from robustkit.ops import deepfool_step
from robustkit.ops import reference
from tests.conftest import devices



def _inputs(batch, candidates, dim, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(batch, candidates, generator=g, dtype=torch.float64)
    w = torch.randn(batch, candidates, dim, generator=g, dtype=torch.float64)
    return f.to(dtype=dtype, device=device), w.to(dtype=dtype, device=device)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_step_reaches_the_linearised_boundary(norm):
    """The defining property: f_l + <w_l, r> = 0 up to the 1e-4 push, and the chosen l is the nearest."""
    f, w = _inputs(6, 5, 50, torch.float64, "cpu", seed=2)
    f = -f.abs()  # every candidate below the boundary, as in an attack
    step, index = deepfool_step(f, w, norm=norm)
    rows = torch.arange(6)
    moved = f[rows, index] + (w[rows, index] * step).sum(1)
    torch.testing.assert_close(moved, torch.full_like(moved, 1e-4))
    dual = w.norm(dim=2) if norm == "l2" else w.abs().sum(dim=2)
    assert torch.equal(index, (f.abs() / dual).argmin(dim=1))


def test_zero_gradient_gives_finite_step():
    f = torch.tensor([[-1.0, -2.0]])
    w = torch.zeros(1, 2, 4)
    for norm in ("l2", "linf"):
        step, _ = deepfool_step(f, w, norm=norm)
        assert torch.isfinite(step).all()


@pytest.mark.parametrize("make, message", [
    (lambda: (torch.randn(3), torch.randn(3, 1, 4)), "f must be a 2-D [B, K] tensor"),
    (lambda: (torch.randn(3, 2), torch.randn(3, 4)), "w must be a 3-D [B, K, D] tensor"),
    (lambda: (torch.randn(3, 2), torch.randn(3, 3, 4)), "w must be [B, K, D] with [B, K] = f's shape"),
    (lambda: (torch.randn(3, 2), torch.randn(3, 2, 4, dtype=torch.float64)), "w must be float32, got float64"),
    (lambda: (torch.randn(3, 2).half(), torch.randn(3, 2, 4).half()), "f must be float32 or float64"),
])
def test_bad_input_errors(make, message):
    f, w = make()
    with pytest.raises(RuntimeError, match=re.escape(message)):
        deepfool_step(f, w)


def test_bad_norm_error():
    with pytest.raises(ValueError, match="norm must be one of"):
        deepfool_step(torch.randn(2, 2), torch.randn(2, 2, 3), norm="l1")


# Regression tests from the reliability review (double backward, D = 0, the backward's index range).

def test_double_backward_raises_instead_of_returning_zero():
    """The backward kernel has no derivative: a gradient of the gradient must be an error, never a silent 0."""
    f, w = _inputs(3, 4, 6, torch.float64, "cpu", seed=7)
    f.requires_grad_(True)
    w.requires_grad_(True)
    step, _ = deepfool_step(f, w, norm="l2")
    (g,) = torch.autograd.grad(step.pow(2).sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* of deepfool_step is not supported"):
        torch.autograd.grad(g.sum(), f)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_empty_gradient_rows_follow_the_spec(device, norm):
    """D = 0: every norm is the floor, so the index is argmin_k |f_k| (the spec), not always 0."""
    f = torch.tensor([[5.0, 1.0, 3.0], [-0.5, 2.0, -0.25]], device=device)
    w = torch.zeros(2, 3, 0, device=device)
    step, index = deepfool_step(f, w, norm=norm)
    ref_step, ref_index = reference.deepfool_step(f.cpu(), w.cpu(), norm=norm)
    assert step.shape == (2, 0)
    assert index.tolist() == ref_index.tolist() == [1, 2]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bad", [3, -1, 10**6])
def test_backward_rejects_an_out_of_range_index(device, bad):
    """The private backward reads w[b, index[b]]: an index outside [0, K) is an error on every device."""
    f, w = _inputs(2, 3, 4, torch.float32, device, seed=8)
    index = torch.tensor([0, bad], device=device)
    with pytest.raises(RuntimeError, match=re.escape(f"index[1] = {bad} is out of range [0, 3)")):
        torch.ops.robustkit._deepfool_step_backward(torch.ones(2, 4, device=device), f, w, index, "l2")
