"""robustkit.ops.ensemble_temperature_ce: what the op-test harness (test_opinfo.py) does not cover: half precision
against PyTorch's own error, huge logits and extreme temperatures, list input, reductions, logit fusion, the direct
gradient against autograd, bad input, and the reliability review's regressions."""
import re

import pytest
import torch
import torch.nn.functional as F

import robustkit.ops as ops
from robustkit.ops import reference
from tests.conftest import devices
from tests.reference.fused_ops import naive_ensemble_ce_grad

HYPER = [dict(temperature=1.0, soft_weight=1.0, hard_weight=0.0),
         dict(temperature=16.0, soft_weight=1.0, hard_weight=1.0),
         dict(temperature=0.5, soft_weight=0.3, hard_weight=2.0)]


def make_case(shape, device, dtype=torch.float32, scale=3.0, layout="contiguous", seed=0):
    gen = torch.Generator().manual_seed(seed)
    num_models, batch, num_classes = shape
    z = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    y = torch.randint(0, num_classes, (batch,), generator=gen)
    if layout == "permuted":  # same values, [K, B, C] view of a [B, K, C] buffer
        z = z.permute(1, 0, 2).contiguous().permute(1, 0, 2)
    return z.to(device=device, dtype=dtype), y.to(device)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_bounded_by_pytorchs(device, dtype):
    shape = (4, 33, 1000)
    z64, y = make_case(shape, device, torch.float64, seed=3)
    z_low = z64.to(dtype)
    exact = reference.ensemble_temperature_ce(z_low.double().cpu(), y.cpu(), temperature=4.0, hard_weight=1.0)
    ours = ops.ensemble_temperature_ce(z_low, y, temperature=4.0, hard_weight=1.0, reduction="none")
    # PyTorch's own error for the same loss computed in this precision.
    eager = sum(F.cross_entropy(z_low[k] / 4.0, y, reduction="none") + F.cross_entropy(z_low[k], y, reduction="none")
                for k in range(shape[0]))
    our_err = (ours.double().cpu() - exact).abs().max()
    torch_err = (eager.double().cpu() - exact).abs().max()
    assert our_err <= 2 * torch_err + 1e-3, (our_err, torch_err)

    z_req = z_low.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ops.ensemble_temperature_ce(z_req, y, temperature=4.0, hard_weight=1.0,
                                                           reduction="sum"), z_req)
    z_eager = z_low.clone().requires_grad_(True)
    eager = sum(F.cross_entropy(z_eager[k] / 4.0, y, reduction="sum") + F.cross_entropy(z_eager[k], y, reduction="sum")
                for k in range(shape[0]))
    (g_eager,) = torch.autograd.grad(eager, z_eager)
    exact_g = reference.ensemble_temperature_ce_grad(z_low.double().cpu(), y.cpu(), torch.ones(shape[1]),
                                                     temperature=4.0, hard_weight=1.0)
    assert g.dtype == dtype
    assert (g.double().cpu() - exact_g).abs().max() <= 2 * (g_eager.double().cpu() - exact_g).abs().max() + 1e-4


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("temperature", [1e-2, 1.0, 1e3])
def test_stable_for_huge_logits_and_extreme_temperatures(device, temperature):
    z, y = make_case((2, 9, 10), device, torch.float32, scale=1.0, seed=5)
    z = (z / z.abs().amax()) * 1e4  # |z| up to 1e4
    z.requires_grad_(True)
    loss = ops.ensemble_temperature_ce(z, y, temperature=temperature, hard_weight=1.0, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    spec = reference.ensemble_temperature_ce(z.detach().double().cpu(), y.cpu(), temperature=temperature, hard_weight=1.0)
    torch.testing.assert_close(loss.detach().double().cpu(), spec, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("device", devices())
def test_list_input_reductions_and_logit_fusion(device):
    z, y = make_case((3, 6, 10), device, seed=7)
    per_sample = ops.ensemble_temperature_ce(z, y, temperature=2.0, reduction="none")
    torch.testing.assert_close(ops.ensemble_temperature_ce(list(z), y, temperature=2.0, reduction="none"), per_sample)
    torch.testing.assert_close(ops.ensemble_temperature_ce(z, y, temperature=2.0, reduction="sum"), per_sample.sum())
    torch.testing.assert_close(ops.ensemble_temperature_ce(z, y, temperature=2.0), per_sample.mean())
    # fuse in logits (Dong et al.): CE at T of the weighted average of the K logits
    w = torch.tensor([0.5, 0.3, 0.2])
    fused = ops.ensemble_temperature_ce(z, y, temperature=2.0, fusion="logits", weights=w, reduction="none")
    averaged = (w.to(device).view(3, 1, 1) * z).sum(0)
    torch.testing.assert_close(fused, F.cross_entropy(averaged / 2.0, y, reduction="none"))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("scale", [1.0, -1.0])
def test_direct_logit_gradient_equals_autograd_of_the_summed_loss(device, hyper, scale, one_thread):
    # what the attacks use instead of autograd through the loss: the same two kernels, called directly
    z, y = make_case((3, 5, 10), device, torch.float64)
    z.requires_grad_(True)
    (expected,) = torch.autograd.grad(scale * ops.ensemble_temperature_ce(z, y, reduction="sum", **hyper), z)
    got = ops.ensemble_temperature_ce_grad(z.detach(), y, scale=scale, **hyper)
    assert not got.requires_grad
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    naive = naive_ensemble_ce_grad(z.detach().cpu(), y.cpu(), **hyper)
    torch.testing.assert_close(got.cpu(), scale * naive, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="logits"):
        ops.ensemble_temperature_ce_grad(z.detach()[0], y)


@pytest.mark.parametrize("bad, match", [
    (dict(logits=torch.randn(3, 7)), r"logits must be a 3-D \[K, B, C\] tensor, got shape \[3, 7\]"),
    (dict(logits=torch.randint(0, 5, (1, 2, 5))), "logits must be a floating-point tensor"),
    (dict(target=torch.tensor([0, 5])), r"target\[1\] = 5 is out of range \[0, 5\)"),
    (dict(target=torch.tensor([0, -1])), r"target\[1\] = -1 is out of range"),
    (dict(target=torch.tensor([0.0, 1.0])), "target must be int64"),
    (dict(target=torch.tensor([0, 1, 2])), r"target must be \[B\] with B = logits.size\(1\) = 2"),
    (dict(temperature=0.0), "temperature must be a finite number > 0"),
    (dict(temperature=-1.0), "temperature must be a finite number > 0"),
    (dict(reduction="avg"), "reduction must be one of"),
    (dict(logits=[torch.randn(2, 5), torch.randn(3, 5)]), r"logits\[1\] has shape \[3, 5\]"),
])
def test_bad_input_names_the_argument(bad, match):
    args = dict(logits=torch.randn(1, 2, 5), target=torch.tensor([0, 1]), temperature=1.0, reduction="none")
    args.update(bad)
    with pytest.raises((RuntimeError, ValueError, TypeError), match=match):
        ops.ensemble_temperature_ce(args.pop("logits"), args.pop("target"), **args)


@pytest.mark.cuda
def test_mismatched_devices():
    with pytest.raises(RuntimeError, match="logits and target must be on the same device"):
        ops.ensemble_temperature_ce(torch.randn(1, 2, 5, device="cuda"), torch.tensor([0, 1]))


# Regression tests from the reliability review: the private backward's target range (an out-of-bounds write
# before), float32 temperatures whose inverse overflows or underflows.

@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bad", [10, 11, 100000, -1, -100000])
def test_backward_op_rejects_out_of_range_targets(device, bad):
    """The backward writes grad[k, b, target[b]]: a target outside [0, C) is an error, on every device."""
    z = torch.randn(1, 4, 10, device=device)
    y = torch.zeros(4, dtype=torch.long, device=device)
    _, stats = torch.ops.robustkit.ensemble_temperature_ce(z, y, 1.0, 1.0, 0.0)
    bad_target = torch.tensor([0, 0, 0, bad], device=device)
    with pytest.raises(RuntimeError, match=re.escape(f"target[3] = {bad} is out of range [0, 10)")):
        torch.ops.robustkit._ensemble_temperature_ce_backward(torch.ones(4, device=device), z, bad_target, stats,
                                                              1.0, 1.0, 0.0)


@pytest.mark.parametrize("device", devices())
def test_forward_rejects_out_of_range_targets_on_every_device(device):
    z = torch.randn(2, 3, 5, device=device)
    with pytest.raises(RuntimeError, match=re.escape("target[2] = 5 is out of range [0, 5)")):
        ops.ensemble_temperature_ce(z, torch.tensor([0, 1, 5], device=device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1e-40, 1e-31, 1e31, 1e300])
def test_float_temperature_whose_inverse_is_not_a_normal_float_is_an_error(dtype, temperature):
    """float32 1/T overflows (T < 2.9e-39) or underflows: the loss came out NaN and attacks silently did
    nothing. Outside [1e-30, 1e30] it is an error naming temperature."""
    z = torch.randn(1, 4, 10).to(dtype)
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(RuntimeError, match=re.escape("temperature must be in [1e-30, 1e+30]")):
        ops.ensemble_temperature_ce(z, y, temperature=temperature, reduction="none")


@pytest.mark.parametrize("temperature", [1e-30, 1e30])
def test_float32_temperature_at_the_range_edges_matches_reference(temperature):
    z = torch.randn(1, 4, 10, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    z32 = z.float().requires_grad_(True)
    loss = ops.ensemble_temperature_ce(z32, y, temperature=temperature, hard_weight=1.0, reduction="none")
    ref = reference.ensemble_temperature_ce(z32.detach(), y, temperature=temperature, hard_weight=1.0)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss.double(), ref.float().double(), rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(loss.sum(), z32)
    ref_grad = reference.ensemble_temperature_ce_grad(z32.detach(), y, torch.ones(4), temperature=temperature,
                                                      hard_weight=1.0)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad.double(), ref_grad.float().double(), rtol=1e-5, atol=1e-5 / temperature)


def test_float64_accepts_tiny_temperatures():
    z = torch.randn(1, 4, 10, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    loss = ops.ensemble_temperature_ce(z, y, temperature=1e-40, reduction="none")
    torch.testing.assert_close(loss, reference.ensemble_temperature_ce(z, y, temperature=1e-40), rtol=1e-10, atol=0)
