"""robustkit.ops.sign_momentum_step beyond the op-test harness (test_opinfo.py: spec, naive, layouts, empty batch,
clip=None, opcheck): the ball and the box hold exactly, zero and NaN gradients, errors, the review's regressions."""
import math
import re

import pytest
import torch

import robustkit.ops as ops
from robustkit.ops import reference
from tests.conftest import devices

TOL = {torch.float32: dict(rtol=1e-6, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def make_case(shape, device, dtype, layout, seed, per_sample=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    x_adv = (x + 0.03 * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    momentum = torch.randn(shape, generator=gen, dtype=torch.float64) * 1e-3
    tensors = [t.to(device=device, dtype=dtype) for t in (x_adv, x, grad, momentum)]
    if layout == "channels_last":
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    elif layout == "non_contiguous":  # every other column of a wider buffer
        tensors = [torch.cat([t, t], dim=-1)[..., ::2] for t in tensors]
        assert not tensors[0].is_contiguous()
    batch = shape[0]
    if per_sample:
        step = (torch.rand(batch, generator=gen, dtype=torch.float64) * 0.02 + 0.005).to(device=device, dtype=dtype)
        eps = (torch.rand(batch, generator=gen, dtype=torch.float64) * 0.05 + 0.01).to(device=device, dtype=dtype)
    else:
        step, eps = 0.01, 0.03
    return tensors, step, eps


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("seed", [4, 5, 6])
def test_constraints_hold_exactly(device, norm, seed):
    (x_adv, x, grad, momentum), _, _ = make_case((16, 3, 12, 12), device, torch.float32, "contiguous", seed=seed)
    eps = (0.05, 8 / 255, 0.1)[seed - 4] if norm == "linf" else 0.5
    for _ in range(5):  # several large steps push against the ball and the box
        grad.normal_()
        ops.sign_momentum_step(x_adv, x, grad, momentum, step_size=0.2, eps=eps, norm=norm)
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        # Exact in the tensor's own arithmetic, also where x +- eps rounds outward.
        assert delta.abs().max() <= eps
    else:
        assert (delta.double().norm(dim=1) <= eps * (1 + 1e-6)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_zero_gradient_gives_no_step_and_no_nan():
    (x_adv, x, grad, momentum), _, _ = make_case((3, 1, 4, 4), "cpu", torch.float32, "contiguous", seed=1)
    grad.zero_()
    momentum.zero_()
    before = x_adv.clone()
    for norm in ("linf", "l2"):
        ops.sign_momentum_step(x_adv, x, grad, momentum, step_size=0.1, eps=1.0, norm=norm, clip=None)
        torch.testing.assert_close(x_adv, before, rtol=0, atol=0)
        assert torch.isfinite(momentum).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_nan_gradient_documented_behaviour(norm):
    """A NaN in a sample's grad: x_adv does not move (and stays finite); with grad_norm="l1" that sample's
    momentum becomes NaN. Other samples are unaffected."""
    (x_adv, x, grad, momentum), _, _ = make_case((2, 1, 4, 4), "cpu", torch.float32, "contiguous", seed=2)
    grad[0, 0, 1, 1] = float("nan")
    x_adv.copy_((x + 0.01 * torch.rand_like(x)).clamp(0, 1))  # start inside the eps-ball and the box
    expected_other, _ = reference.sign_momentum_step(x_adv[1:], x[1:], grad[1:], momentum[1:], step_size=0.01,
                                                     eps=0.03, norm=norm)
    before = x_adv[0].clone()
    ops.sign_momentum_step(x_adv, x, grad, momentum, step_size=0.01, eps=0.03, norm=norm)
    torch.testing.assert_close(x_adv[0], before, rtol=0, atol=0)
    assert torch.isnan(momentum[0]).all() and torch.isfinite(momentum[1]).all()
    torch.testing.assert_close(x_adv[1:].double(), expected_other, **TOL[torch.float32])


@pytest.mark.parametrize("change, match", [
    (dict(eps=-0.1), "eps must be >= 0, got -0.1"),
    (dict(eps=torch.tensor([0.1, -0.1])), r"eps\[1\] must be >= 0"),
    (dict(step_size=torch.tensor([0.1, 0.1, 0.1])), r"step_size must be a float or a \[B\] tensor with B = 2"),
    (dict(x_orig=torch.rand(2, 4)), "x_orig and x_adv must have the same shape"),
    (dict(grad=torch.rand(2, 3, dtype=torch.float64)), "grad must be float32, got float64"),
    (dict(x_adv=torch.rand(2, 3).half()), "x_adv must be float32 or float64"),
    (dict(norm="l3"), 'norm must be "linf" or "l2", got "l3"'),
    (dict(grad_norm="l2"), 'grad_norm must be "l1" or "none"'),
    (dict(clip=(1.0, 0.0)), r"clip must be \(min, max\) with min <= max"),
])
def test_bad_input_names_the_argument(change, match):
    args = dict(x_adv=torch.rand(2, 3), x_orig=torch.rand(2, 3), grad=torch.randn(2, 3), momentum=None,
                step_size=0.1, eps=0.1)
    args.update(change)
    with pytest.raises((RuntimeError, ValueError), match=match):
        ops.sign_momentum_step(args.pop("x_adv"), args.pop("x_orig"), args.pop("grad"), args.pop("momentum"), **args)


# Regression tests from the reliability review: float32 L2 norms of huge gradients, NaN per-sample step
# sizes, and in-place buffers that share memory with another argument.

@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("grad_norm, with_momentum", [("none", False), ("l1", False), ("none", True)])
def test_float32_l2_step_of_a_huge_gradient_moves_by_step_size(device, grad_norm, with_momentum):
    """|grad| ~ 1e20: the float32 sum of squares overflowed, inverse_norm(inf) = 0 and the step was silently 0.
    The squares are summed in float64 now, so the step is step_size, as in the reference."""
    gen = torch.Generator().manual_seed(12)
    x0 = torch.rand(2, 50, generator=gen).to(device)
    x_adv = x0.clone()
    grad = (torch.randn(2, 50, generator=gen) * 1e20).to(device)
    momentum = torch.zeros_like(x0) if with_momentum else None
    expected, _ = reference.sign_momentum_step(x_adv, x0, grad, momentum, step_size=0.1, eps=1.0, norm="l2",
                                               grad_norm=grad_norm, decay=1.0, clip=None)
    ops.sign_momentum_step(x_adv, x0, grad, momentum, step_size=0.1, eps=1.0, norm="l2", grad_norm=grad_norm,
                           clip=None)
    moved = (x_adv - x0).double().norm(dim=1)
    torch.testing.assert_close(moved.cpu(), torch.full((2,), 0.1, dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(x_adv.cpu().double(), expected, **TOL[torch.float32])


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_per_sample_step_size_is_an_error(device, bad):
    x0 = torch.rand(2, 3, device=device)
    with pytest.raises(RuntimeError, match=re.escape("step_size[1] must be finite")):
        ops.sign_momentum_step(x0.clone(), x0, torch.randn(2, 3, device=device), None,
                               step_size=torch.tensor([0.1, bad], device=device), eps=0.1)


@pytest.mark.parametrize("device", devices())
def test_per_sample_eps_is_checked_on_every_device(device):
    x0 = torch.rand(2, 3, device=device)
    with pytest.raises(RuntimeError, match=re.escape("eps[1] must be >= 0, got nan")):
        ops.sign_momentum_step(x0.clone(), x0, torch.randn(2, 3, device=device), None, step_size=0.1,
                               eps=torch.tensor([0.1, float("nan")], device=device))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("case, message", [
    ("x_adv_is_x_orig", "x_adv and x_orig must not share memory"),
    ("momentum_is_x_adv", "x_adv and momentum must not share memory"),
    ("momentum_is_grad", "momentum and grad must not share memory"),
    ("x_adv_overlaps_x_orig", "x_adv and x_orig must not share memory"),
    ("expanded_x_adv", "x_adv is updated in place and must not have overlapping memory"),
])
def test_in_place_buffers_must_not_share_memory(device, case, message):
    """x_adv passed as x_orig made the ball follow x_adv (5 steps moved 0.1 > eps 0.03); a shared momentum was
    garbage. Both are errors now."""
    x0 = torch.rand(2, 3, device=device)
    grad = torch.randn(2, 3, device=device)
    x_adv, x_orig, momentum = x0.clone(), x0, None
    if case == "x_adv_is_x_orig":
        x_adv = x_orig
    elif case == "momentum_is_x_adv":
        momentum = x_adv
    elif case == "momentum_is_grad":
        momentum = grad
    elif case == "x_adv_overlaps_x_orig":
        buffer = torch.rand(3, 3, device=device)
        x_adv, x_orig = buffer[:2], buffer[1:]
    else:
        x_adv, x_orig = torch.rand(1, 3, device=device).expand(2, 3), x0
    with pytest.raises(RuntimeError, match=re.escape(message)):
        ops.sign_momentum_step(x_adv, x_orig, grad, momentum, step_size=0.01, eps=0.03, grad_norm="none")
