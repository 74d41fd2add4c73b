"""robustkit.ops.deepfool_step against its float64 reference, gradcheck, opcheck, edge cases, errors."""
import re

import pytest
import torch

from robustkit.ops import deepfool_step
from robustkit.ops import reference
from tests.conftest import devices

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-14)}


def _inputs(batch, candidates, dim, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(batch, candidates, generator=g, dtype=torch.float64)
    w = torch.randn(batch, candidates, dim, generator=g, dtype=torch.float64)
    return f.to(dtype=dtype, device=device), w.to(dtype=dtype, device=device)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("shape", [(7, 9, 784), (1, 1, 5), (3, 4, 1), (16, 2, 300)])
def test_matches_reference(device, dtype, norm, shape):
    f, w = _inputs(*shape, dtype, device, seed=sum(shape))
    step, index = deepfool_step(f, w, norm=norm)
    ref_step, ref_index = reference.deepfool_step(f.cpu(), w.cpu(), norm=norm)
    assert step.dtype == dtype and step.shape == (shape[0], shape[2])
    assert torch.equal(index.cpu(), ref_index)
    torch.testing.assert_close(step.cpu().double(), ref_step, **TOL[dtype])


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_w_and_empty_batch(device):
    f, w = _inputs(5, 3, 40, torch.float32, device, seed=1)
    w_kbd = w.transpose(0, 1).contiguous().transpose(0, 1)  # [B, K, D] view of a [K, B, D] buffer
    assert not w_kbd.is_contiguous()
    torch.testing.assert_close(deepfool_step(f, w_kbd)[0], deepfool_step(f, w)[0])
    step, index = deepfool_step(f[:0], w[:0])
    assert step.shape == (0, 40) and index.shape == (0,)


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


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(device, norm, seed):
    f, w = _inputs(3, 4, 6, torch.float64, device, seed)
    f.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: deepfool_step(a, b, norm=norm)[0], (f, w))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_backward_matches_reference_autograd(norm):
    f, w = _inputs(5, 3, 20, torch.float64, "cpu", seed=3)
    f.requires_grad_(True)
    w.requires_grad_(True)
    g = torch.randn(5, 20, dtype=torch.float64)
    ours = torch.autograd.grad(deepfool_step(f, w, norm=norm)[0], (f, w), g)
    ref = torch.autograd.grad(reference.deepfool_step(f, w, norm=norm)[0], (f, w), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", devices())
def test_opcheck(device):
    f, w = _inputs(4, 3, 10, torch.float64, device, seed=4)
    f.requires_grad_(True)
    w.requires_grad_(True)
    for norm in ("l2", "linf"):
        torch.library.opcheck(torch.ops.robustkit.deepfool_step.default, (f, w, norm))


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


def test_compiles_fullgraph_with_autograd():
    """The fake kernel and the autograd registration let torch.compile trace the op without graph breaks."""
    f, w = _inputs(4, 3, 10, torch.float64, "cpu", seed=5)
    f.requires_grad_(True)
    w.requires_grad_(True)
    compiled = torch.compile(lambda a, b: deepfool_step(a, b)[0].square().sum(), fullgraph=True,
                             backend="aot_eager")
    grads = torch.autograd.grad(compiled(f, w), (f, w))
    expected = torch.autograd.grad(deepfool_step(f, w)[0].square().sum(), (f, w))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)


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
