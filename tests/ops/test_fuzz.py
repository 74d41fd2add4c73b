"""Property-based fuzzing (hypothesis) of every fused op against the float64 spec, robustkit/ops/reference.py.

Each example draws a shape (empty batch, batch of one, odd sizes), a dtype (float32 or float64), a memory
layout (contiguous, transposed, strided, channels_last where it applies, a stride-0 expanded batch), a value
scale from 0 and 1e-30 up to 1e20, sometimes a non-finite entry, and hyperparameters at and beyond the
documented range edges. Then:
- an out-of-range argument must raise an error whose message names that argument (and nothing else counts
  as a pass for it);
- otherwise the op must equal the spec within the tolerance below (NaN equal to NaN, inf to inf), where
  the spec's values are first rounded to the op's dtype (a true value beyond float32's range is inf there).

Tolerance table (``|got - want| <= atol + rtol |want|``, per element), and why:
- ensemble_temperature_ce, loss: float32 atol ``1e-5 + 32 eps32 K (sw/T + hw) max|z|`` and rtol 2e-5: each of
  the K logsumexps of z/T is computed from terms of size ``max|z|/T``, so its rounding is a few ulp of that
  (32 ulp of headroom for the float32 exp polynomial and the sums); float64 1e-9 + 32 eps64 (same terms).
  gradient: float32 ``2e-5 (sw/T + hw) max|upstream|`` (softmax entries are in [0, 1], scaled by sw/T + hw),
  float64 1e-10 of the same scale.
- sign_momentum_step: x_adv atol ``4 eps (1 + radius + step + max|x|)`` (a handful of roundings of values of
  that size) plus 1e-6 relative in float32; momentum rtol 1e-5 (float32) / 1e-12, atol scaled by max|m|.
  An L-inf sign may differ only where the spec's g is within ``64 eps`` of its terms (cancellation).
- deepfool_step: step and gradients rtol/atol ``2e-5 sqrt(D + 1)`` (float32: sums of D squares) or 1e-10
  (float64) of the row's largest magnitude; the index must be equal except on a near-tie (64 eps relative).
- cw_l2_step: w atol ``lr 1e-4 + 1e-6 max|w|`` (float32; Adam's update is at most ~lr per element), x and
  best_adv ``(hi - lo) (w_tol + 4e-6)``, l2sq and best_l2sq rtol 1e-5 of ``D (hi - lo)^2``; float64 1e-10.
  Elements whose spec gradient is within ``64 eps`` of its terms (the sign of Adam's step is then noise)
  are excluded for w and x, and elements whose x(w) rounds to the box edge (dx/dw = 0 in the op's dtype) for w. The best-so-far selection must be equal.
- conv2d_input_grad: atol ``16 eps32 sqrt(C_out KH KW) (|g| * |w|)`` (float32), ``1e-12 sqrt(..) (|g| * |w|)``
  (float64), where ``|g| * |w|`` is the transposed convolution of the absolute values: the bound of a sum of
  that many products.

ROBUSTKIT_FUZZ_EXAMPLES (default 40 per op) sets the number of examples; the default run is derandomised
(the same examples every time, as CI needs), a larger one is random.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import robustkit.ops as ops
from robustkit.ops import reference

F32, F64 = torch.float32, torch.float64
EXAMPLES = int(os.environ.get("ROBUSTKIT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ROBUSTKIT_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=list(HealthCheck))
ERRORS = (RuntimeError, ValueError, TypeError, IndexError)

dtypes = st.sampled_from([F32, F64])
batches = st.sampled_from([0, 1, 1, 2, 3, 5, 7])
scales = st.sampled_from([0.0, 1e-30, 1e-3, 1.0, 1.0, 1.0, 30.0, 1e4])


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _eps(dtype):
    return torch.finfo(dtype).eps


def _rounded(want, dtype):
    """The spec's float64 value as the op's dtype can hold it (overflow to inf, underflow to 0)."""
    return want.to(dtype).double() if want.is_floating_point() else want


def check_close(got, want, atol, rtol, what, mask=None):
    """``|got - want| <= atol + rtol |want|`` elementwise (atol may be a tensor), NaN == NaN, inf == inf;
    elements where ``mask`` is False are not compared."""
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    assert got.shape == want.shape, f"{what}: shape {list(got.shape)} != {list(want.shape)}"
    atol = torch.as_tensor(atol, dtype=F64)
    same = (got == want) | (got.isnan() & want.isnan())
    close = (got - want).abs() <= atol + rtol * want.abs()
    ok = same | close
    if mask is not None:
        ok = ok | ~mask
    if not bool(ok.all()):
        bad = (~ok).nonzero()[:3].tolist()
        detail = [(i, float(got[tuple(i)]), float(want[tuple(i)])) for i in bad]
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.numel()} elements differ, e.g. {detail}")


def expect_error_naming(fn, *names):
    """``fn`` must raise, with a message naming one of ``names`` (the out-of-range argument)."""
    try:
        fn()
    except ERRORS as err:
        message = str(err)
        assert any(n in message for n in names), f"the error does not name {names}: {message}"
        return
    raise AssertionError(f"no error for an out-of-range {names[0]}")


def error_or_result(fn, *names):
    """``fn``'s result, or None when it raised an error that names one of ``names`` (an input outside the
    documented range may be refused, but then by name)."""
    try:
        return fn()
    except ERRORS as err:
        message = str(err)
        assert any(n in message for n in names), f"the error does not name {names}: {message}"
        return None


def _layout(t, layout):
    if layout == "transposed" and t.dim() >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "strided":
        return torch.stack([t, t], dim=-1).flatten(-2)[..., ::2]
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def _values(gen, shape, scale, dtype, non_finite):
    t = torch.randn(shape, generator=gen, dtype=F64) * scale
    if non_finite is not None and t.numel():
        t.view(-1)[int(torch.randint(t.numel(), (1,), generator=gen))] = non_finite
    return t.to(dtype)


non_finites = st.sampled_from([None] * 6 + [math.nan, math.inf, -math.inf])


# ----------------------------------------------------------------------------------------------------------
@FUZZ
@given(k=st.integers(1, 4), b=batches, c=st.sampled_from([1, 2, 3, 10, 37]), dtype=dtypes,
       layout=st.sampled_from(["contiguous", "transposed", "strided"]), scale=scales, non_finite=non_finites,
       temperature=st.sampled_from([1e-2, 1e3, 1.0, 0.5, 16.0, 1e-40, 1e-30, 1e30, 1e300, 0.0, -1.0,
                                    math.inf, math.nan]),
       soft=st.sampled_from([0.0, 0.3, 1.0]), hard=st.sampled_from([0.0, 1.0, 2.0]),
       target_edge=st.sampled_from(["random", "edges", "random", "-1", "C"]), seed=st.integers(0, 2**31 - 1))
def test_fuzz_ensemble_temperature_ce(k, b, c, dtype, layout, scale, non_finite, temperature, soft, hard,
                                      target_edge, seed):
    gen = torch.Generator().manual_seed(seed)
    z = _layout(_values(gen, (k, b, c), scale, dtype, non_finite), layout)
    y = torch.randint(0, c, (b,), generator=gen)
    if target_edge == "edges" and b:
        y[0], y[-1] = 0, c - 1
    upstream = (torch.rand(b, generator=gen, dtype=F64) + 0.5).to(dtype)
    hyper = dict(temperature=temperature, soft_weight=soft, hard_weight=hard)
    run = lambda: ops.ensemble_temperature_ce(z.detach().requires_grad_(True), y, reduction="none", **hyper)  # noqa
    bad = [] if temperature > 0 and math.isfinite(temperature) else ["temperature"]
    if target_edge in ("-1", "C") and b:
        y[int(torch.randint(b, (1,), generator=gen))] = -1 if target_edge == "-1" else c
        bad.append("target")
    documented = 1e-2 <= temperature <= 1e3
    if bad:  # the op may check its arguments in any order: the error names one of the bad ones (or a
        # temperature outside the documented range, which it may also refuse)
        names = bad + ([] if documented else ["temperature"])
        expect_error_naming(run, *names)
        expect_error_naming(lambda: ops.ensemble_temperature_ce_grad(z, y, **hyper), *names)
        return
    z_req = z.detach().requires_grad_(True)
    loss = error_or_result(lambda: ops.ensemble_temperature_ce(z_req, y, reduction="none", **hyper),
                           *(() if documented else ("temperature",)))
    if loss is None:
        return
    (grad,) = torch.autograd.grad(loss, z_req, upstream) if b else (torch.zeros_like(z),)
    want = reference.ensemble_temperature_ce(z.double(), y, **hyper)
    want_grad = reference.ensemble_temperature_ce_grad(z.double(), y, upstream.double(), **hyper)
    finite = z[torch.isfinite(z)]
    zmax = float(finite.abs().max()) if finite.numel() else 0.0
    spread = soft / temperature + hard
    if dtype == F32:
        atol, rtol = 1e-5 + 32 * _eps(F32) * k * spread * zmax, 2e-5
        gtol = 2e-5 * spread * 1.5
    else:
        atol, rtol = 1e-9 + 32 * _eps(F64) * k * spread * zmax, 1e-9
        gtol = 1e-10 * spread * 1.5
    check_close(loss, _rounded(want, dtype), atol, rtol, "loss")
    check_close(grad, _rounded(want_grad, dtype), gtol, 2e-5 if dtype == F32 else 1e-9, "grad")
    direct = ops.ensemble_temperature_ce_grad(z, y, **hyper)
    check_close(direct, _rounded(reference.ensemble_temperature_ce_grad(z.double(), y, torch.ones(b, dtype=F64),
                                                                       **hyper), dtype),
                gtol / 1.5, 2e-5 if dtype == F32 else 1e-9, "ensemble_temperature_ce_grad")


# ----------------------------------------------------------------------------------------------------------
@FUZZ
@given(b=batches, feat=st.sampled_from([(5,), (3, 4), (2, 3, 5), (1, 7, 3), (3, 1, 1)]), dtype=dtypes,
       layout=st.sampled_from(["contiguous", "transposed", "strided", "channels_last", "expanded"]),
       norm=st.sampled_from(["linf", "l2"]), grad_norm=st.sampled_from(["l1", "none"]),
       momentum=st.booleans(), decay=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       grad_scale=st.sampled_from([0.0, 1e-30, 1e-3, 1.0, 1.0, 1e3, 1e20]), non_finite=non_finites,
       radius=st.sampled_from([0.0, 8 / 255, 0.3, 10.0, -0.1, "per-sample"]),
       step=st.sampled_from([0.0, 2 / 255, 0.1, 5.0, "per-sample", "per-sample-nan"]),
       clip=st.sampled_from([(0.0, 1.0), None, (-1.0, 2.0), (0.5, 0.5), (1.0, 0.0)]), seed=st.integers(0, 2**31 - 1))
def test_fuzz_sign_momentum_step(b, feat, dtype, layout, norm, grad_norm, momentum, decay, grad_scale, non_finite,
                                 radius, step, clip, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (b, *feat)
    x0 = torch.rand(shape, generator=gen, dtype=F64).to(dtype)
    x_adv = (x0.double() + 0.05 * torch.randn(shape, generator=gen, dtype=F64)).clamp(0, 1).to(dtype)
    grad = _values(gen, shape, grad_scale, dtype, non_finite)
    m = (torch.randn(shape, generator=gen, dtype=F64) * 1e-3).to(dtype) if momentum else None
    if radius == "per-sample":
        radius = (torch.rand(b, generator=gen, dtype=F64) * 0.1).to(dtype)
        if b:
            radius[0] = 0.0  # the edge of the range
    if step in ("per-sample", "per-sample-nan"):
        nan_step = step == "per-sample-nan"
        step = (torch.rand(b, generator=gen, dtype=F64) * 0.05).to(dtype)
        if nan_step and b:
            step[-1] = math.nan
    else:
        nan_step = False
    kw = dict(step_size=step, eps=radius, decay=decay, grad_norm=grad_norm, norm=norm, clip=clip)
    x_orig = x0[:1].expand_as(x0) if layout == "expanded" and b else _layout(x0, layout)
    if layout == "expanded" and b:
        x_adv = (x_orig.double() + 0.05 * torch.randn(shape, generator=gen, dtype=F64)).clamp(0, 1).to(dtype)
    bufs = dict(x_adv=_layout(x_adv, layout if layout != "expanded" else "contiguous"), grad=_layout(grad, layout),
                momentum=None if m is None else _layout(m, layout if layout != "expanded" else "contiguous"))
    run = lambda: ops.sign_momentum_step(bufs["x_adv"], x_orig, bufs["grad"], bufs["momentum"], **kw)  # noqa
    bad = (["eps"] if isinstance(radius, float) and radius < 0 else []) + (
        ["clip"] if clip is not None and clip[0] > clip[1] else [])
    if bad:
        expect_error_naming(run, *bad)
        return
    start = {k: (None if v is None else v.clone()) for k, v in bufs.items()}
    if nan_step and b:
        # a NaN per-sample step is refused by name, or leaves that sample's x_adv finite (no silent NaN image)
        if error_or_result(run, "step_size") is None:
            return
        assert torch.isfinite(bufs["x_adv"][-1]).all() or not torch.isfinite(start["x_adv"][-1]).all(), \
            "a NaN step_size made x_adv NaN"
        return
    run()
    want_x, want_m = reference.sign_momentum_step(start["x_adv"], x_orig, start["grad"], start["momentum"], **kw)
    eps = _eps(dtype)
    rmax = float(radius.max()) if isinstance(radius, torch.Tensor) and radius.numel() else (
        radius if isinstance(radius, float) else 0.0)
    smax = float(step.max()) if isinstance(step, torch.Tensor) and step.numel() else (
        step if isinstance(step, float) else 0.0)
    lo_hi = 2.0 if clip is None else max(abs(clip[0]), abs(clip[1]))
    atol = 4 * eps * (1 + rmax + smax + lo_hi) + (1e-6 if dtype == F32 else 0.0)
    mask = None
    if norm == "linf" and b:
        # where the spec's g is within 64 eps of its terms, its sign is rounding noise
        g = start["grad"].double()
        terms = g.abs() / g.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *[1] * len(feat)) \
            if grad_norm == "l1" else g.abs()
        if start["momentum"] is not None:
            terms = terms + abs(decay) * start["momentum"].double().abs()
        mask = ~(want_m if want_m is not None else terms).isnan() & (
            (want_m.abs() if want_m is not None else terms) > 64 * eps * terms) | ~torch.isfinite(terms)
    check_close(bufs["x_adv"], _rounded(want_x, dtype), atol, 1e-6 if dtype == F32 else 1e-12, "x_adv", mask)
    if want_m is not None:
        finite = want_m[torch.isfinite(want_m)]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        check_close(bufs["momentum"], _rounded(want_m, dtype), 8 * eps * scale, 1e-5 if dtype == F32 else 1e-12,
                    "momentum")


# ----------------------------------------------------------------------------------------------------------
@FUZZ
@given(b=batches, k=st.sampled_from([1, 2, 3, 9]), d=st.sampled_from([0, 1, 2, 7, 33, 300]), dtype=dtypes,
       layout=st.sampled_from(["contiguous", "transposed", "strided"]), norm=st.sampled_from(["l2", "linf", "l1"]),
       scale=scales, non_finite=non_finites, zero_row=st.booleans(), tie=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_fuzz_deepfool_step(b, k, d, dtype, layout, norm, scale, non_finite, zero_row, tie, seed):
    gen = torch.Generator().manual_seed(seed)
    f = _values(gen, (b, k), max(scale, 1e-3), dtype, None)
    w = _values(gen, (b, k, d), scale, dtype, non_finite)
    if zero_row and b:
        w[0, 0] = 0
    if tie and b and k >= 2:  # an exact tie: the lowest candidate must win
        f[:, 1], w[:, 1] = f[:, 0], w[:, 0]
    f_in, w_in = _layout(f, layout), _layout(w, layout)
    if norm not in ("l2", "linf"):
        expect_error_naming(lambda: ops.deepfool_step(f_in, w_in, norm=norm), "norm")
        return
    f_req, w_req = f_in.detach().requires_grad_(True), w_in.detach().requires_grad_(True)
    out = error_or_result(lambda: ops.deepfool_step(f_req, w_req, norm=norm), *(("w",) if d == 0 else ()))
    if out is None:
        return
    step, index = out
    want_step, want_index = reference.deepfool_step(f.double(), w.double(), norm=norm)
    assert index.dtype == torch.int64 and index.shape == (b,)
    # the index may differ only on a near-tie of the distances
    dual = w.double().norm(dim=2) if norm == "l2" else w.double().abs().sum(dim=2)
    floor = 1e-12
    dist = torch.nan_to_num(f.double().abs() / dual.clamp_min(floor), nan=math.inf)
    rows = torch.arange(b)
    same = index == want_index
    if not bool(same.all()):
        a, c = dist[rows, index], dist[rows, want_index]
        near = (a - c).abs() <= 64 * _eps(dtype) * torch.maximum(a.abs(), c.abs())
        assert bool((same | near).all()), f"index {index.tolist()} != {want_index.tolist()} away from a tie"
    rtol = 2e-5 * math.sqrt(d + 1) if dtype == F32 else 1e-10
    rowmax = torch.nan_to_num(want_step.abs(), nan=0.0, posinf=0.0).amax(dim=1, keepdim=True) if d else \
        want_step.new_zeros(b, 1)
    mask = same.view(-1, 1).expand_as(want_step)
    check_close(step, _rounded(want_step, dtype), rtol * rowmax + 1e-30, rtol, "step", mask)
    if b and d and bool(torch.isfinite(w).all() and torch.isfinite(f).all()):
        cot = torch.randn(b, d, generator=gen, dtype=F64).to(dtype)
        grad_f, grad_w = torch.autograd.grad(step, (f_req, w_req), cot)
        f64, w64 = f.double().requires_grad_(True), w.double().requires_grad_(True)
        ws, _ = reference.deepfool_step(f64, w64, norm=norm)
        want_gf, want_gw = torch.autograd.grad(ws, (f64, w64), cot.double())
        for name, got, want in (("grad_f", grad_f, want_gf), ("grad_w", grad_w, want_gw)):
            big = float(torch.nan_to_num(want.abs(), posinf=0.0).max())
            # float32 cancellation in <g, sign w> and <g, w>: 16 eps sqrt(D) of the terms' size
            terms = 16 * _eps(dtype) * math.sqrt(d) * big * (1 + float(cot.abs().max()))
            rmask = same.view(-1, *[1] * (want.dim() - 1)).expand_as(want)
            check_close(got, _rounded(want, dtype), rtol * big + terms, rtol, name, rmask)


# ----------------------------------------------------------------------------------------------------------
@FUZZ
@given(b=batches, feat=st.sampled_from([(), (1,), (7,), (3, 4), (1, 5, 5)]), dtype=dtypes,
       layout=st.sampled_from(["contiguous", "transposed", "strided"]), step=st.sampled_from([1, 2, 10, 1000, 0, -1]),
       lr=st.sampled_from([1e-4, 0.01, 5.0, 1e6, -1.0]),
       betas=st.sampled_from([(0.9, 0.999), (0.0, 0.0), (0.5, 0.9999), (0.99, 0.9), (1.0, 0.9), (0.9, 1.0),
                              (-0.1, 0.9)]),
       clip=st.sampled_from([(0.0, 1.0), (-1.0, 2.0), (-3.0, -2.0), (1.0, 1.0), (1.0, 0.0), (0.0, math.inf)]),
       w_scale=st.sampled_from([0.1, 1.0, 3.0, 20.0]), grad_scale=st.sampled_from([0.0, 1.0, 1e3, 1e6]),
       best=st.sampled_from(["inf", "zero", "random"]), seed=st.integers(0, 2**31 - 1))
def test_fuzz_cw_l2_step(b, feat, dtype, layout, step, lr, betas, clip, w_scale, grad_scale, best, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (b, *feat)
    lo, hi = clip
    w = (torch.randn(shape, generator=gen, dtype=F64) * w_scale).to(dtype)
    box = (hi - lo) if math.isfinite(hi - lo) else 1.0
    x = (lo + box * (torch.tanh(w.double()) + 1) / 2).to(dtype)
    x_orig = (lo + box * torch.rand(shape, generator=gen, dtype=F64)).to(dtype)
    loss_grad = (torch.randn(shape, generator=gen, dtype=F64) * grad_scale).to(dtype)
    m = (0.1 * torch.randn(shape, generator=gen, dtype=F64)).to(dtype)
    v = (0.1 * torch.randn(shape, generator=gen, dtype=F64).abs()).to(dtype)
    best_adv = torch.rand(shape, generator=gen, dtype=F64).to(dtype)
    best_l2sq = {"inf": torch.full((b,), math.inf, dtype=F64), "zero": torch.zeros(b, dtype=F64),
                 "random": torch.rand(b, generator=gen, dtype=F64) * max(1, math.prod(feat))}[best].to(dtype)
    success = torch.rand(b, generator=gen) < 0.6
    state = dict(w=w, x=x, exp_avg=m, exp_avg_sq=v, best_adv=best_adv, best_l2sq=best_l2sq)
    start = {k: t.clone() for k, t in state.items()}
    x_orig_in, loss_grad_in = _layout(x_orig, layout), _layout(loss_grad, layout)

    def run():
        return ops.cw_l2_step(state["w"], state["x"], state["exp_avg"], state["exp_avg_sq"], state["best_adv"],
                              state["best_l2sq"], x_orig_in, loss_grad_in, success, step=step, lr=lr, betas=betas,
                              clip=clip)
    bad = (["step"] if step < 1 else []) + (["lr"] if lr < 0 else []) + (
        [] if 0 <= betas[0] < 1 and 0 <= betas[1] < 1 else ["beta"]) + (
        [] if math.isfinite(lo) and math.isfinite(hi) and lo < hi else ["clip"])
    if bad:
        expect_error_naming(run, *bad)
        return
    l2sq = run()
    want = reference.cw_l2_step(start["w"], x_orig, loss_grad, success, start["exp_avg"], start["exp_avg_sq"],
                                start["best_adv"], start["best_l2sq"], step=step, lr=lr, betas=betas, clip=clip)
    eps = _eps(dtype)
    d = max(1, math.prod(feat))
    w_tol = (lr * 1e-4 + 1e-6 * float(w.abs().max()) if b and d else 0.0) if dtype == F32 else 1e-10 * (1 + lr)
    x_tol = (hi - lo) * (w_tol + (4e-6 if dtype == F32 else 1e-12))
    mask = None
    if b:
        # where the spec's gradient is within 64 eps of its terms, the sign of Adam's step is noise
        x64, x0 = start["x"].double(), x_orig.double()
        terms = (2 * (x64 - x0).abs() + loss_grad.double().abs())
        g = (2 * (x64 - x0) + loss_grad.double())
        mask = (g.abs() > 64 * eps * terms) | (terms == 0)
        # where x(w) rounds to the box edge in the op's dtype (|w| > ~9 in float32), dx/dw is 0 there but
        # ~1e-9 in float64, and Adam's normalised step turns that into a move of up to lr: w is not comparable
        saturated = (start["x"] == lo) | (start["x"] == hi)
    check_close(state["w"], _rounded(want["w"], dtype), w_tol, 1e-5 if dtype == F32 else 1e-10, "w",
                None if mask is None else mask & ~saturated)
    check_close(state["x"], _rounded(want["x"], dtype), x_tol, 1e-5 if dtype == F32 else 1e-10, "x", mask)
    l2_tol = (1e-5 if dtype == F32 else 1e-10) * d * (hi - lo) ** 2
    check_close(l2sq, _rounded(want["l2sq"], dtype), l2_tol, 1e-5, "l2sq")
    improved = success & (want["l2sq"] < start["best_l2sq"].double())
    got_improved = state["best_l2sq"] != start["best_l2sq"]
    # selection equal except where l2sq is within rounding of the old best
    near = (want["l2sq"] - start["best_l2sq"].double()).abs() <= l2_tol
    assert bool(((improved == got_improved) | near).all()), "best-so-far selection differs from the spec"
    check_close(state["best_adv"], _rounded(want["best_adv"], dtype), x_tol + (hi - lo) * 4 * eps, 0, "best_adv",
                (improved == got_improved).view(-1, *[1] * len(feat)).expand(shape) if b else None)


# ----------------------------------------------------------------------------------------------------------
@FUZZ
@given(b=st.sampled_from([0, 1, 2, 3]), c_in=st.integers(1, 5), c_out=st.integers(0, 4), kh=st.integers(1, 5),
       kw=st.integers(1, 5), ph=st.sampled_from([0, 1, 2, 6, -1, 2**62]), pw=st.integers(0, 6),
       h=st.sampled_from([1, 2, 5, 9, 28]), w=st.sampled_from([1, 3, 31, 32, 33, 65]), dtype=dtypes,
       layout=st.sampled_from(["contiguous", "channels_last", "transposed", "strided"]), scale=scales,
       non_finite=st.sampled_from([None] * 6 + [math.nan, math.inf]), seed=st.integers(0, 2**31 - 1))
def test_fuzz_conv2d_input_grad(b, c_in, c_out, kh, kw, ph, pw, h, w, dtype, layout, scale, non_finite, seed):
    gen = torch.Generator().manual_seed(seed)
    if ph < 0 or ph > 2**40:
        g = torch.randn(b, c_out, 3, 3, generator=gen).to(dtype)
        wt = torch.randn(c_out, c_in, kh, kw, generator=gen).to(dtype)
        expect_error_naming(lambda: ops.conv2d_input_grad(g, wt, (h, w), (ph, pw)), "padding", "input_size",
                            "grad_output")
        return
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    assume(oh >= 0 and ow >= 0)
    g = _layout(_values(gen, (b, c_out, oh, ow), scale, dtype, non_finite), layout)
    wt = _layout(_values(gen, (c_out, c_in, kh, kw), 1.0, dtype, None), layout if layout != "strided" else
                 "contiguous")
    g_req, w_req = g.detach().requires_grad_(True), wt.detach().requires_grad_(True)
    if oh == 0 or ow == 0:
        # an empty output plane: refused by name, or a forward and a backward that both work
        out = error_or_result(lambda: ops.conv2d_input_grad(g_req, w_req, (h, w), (ph, pw)), "grad_output",
                              "input_size", "padding")
        if out is not None:
            assert torch.equal(out, torch.zeros_like(out))
            if out.numel():
                torch.autograd.grad(out.sum(), (g_req, w_req), allow_unused=True)
        return
    out = ops.conv2d_input_grad(g_req, w_req, (h, w), (ph, pw))
    if c_out == 0:  # no output channels: a zero gradient (PyTorch's conv_transpose2d refuses C_out = 0)
        assert out.shape == (b, c_in, h, w) and torch.equal(out, torch.zeros_like(out))
        return
    want = reference.conv2d_input_grad(g.double(), wt.double(), (h, w), (ph, pw))
    bound = reference.conv2d_input_grad(torch.nan_to_num(g.double().abs(), nan=0.0, posinf=0.0),
                                        wt.double().abs(), (h, w), (ph, pw))
    k = 16 if dtype == F32 else 1e-12 / _eps(F64)
    atol = k * _eps(dtype) * math.sqrt(max(1, c_out * kh * kw)) * bound + 1e-300
    check_close(out, _rounded(want, dtype), atol, 0.0, "grad_input")
    if out.numel() and bool(torch.isfinite(g).all()):
        cot = torch.randn(out.shape, generator=gen, dtype=F64).to(dtype)
        d_g, d_w = torch.autograd.grad(out, (g_req, w_req), cot, allow_unused=True)
        g64, w64 = g.double().requires_grad_(True), wt.double().requires_grad_(True)
        want_g, want_w = torch.autograd.grad(reference.conv2d_input_grad(g64, w64, (h, w), (ph, pw)), (g64, w64),
                                             cot.double(), allow_unused=True)
        for name, got, ref_ in (("grad_grad_output", d_g, want_g), ("grad_weight", d_w, want_w)):
            if ref_ is None or got is None:
                assert got is None or not got.any() or ref_ is not None, name
                continue
            big = float(ref_.abs().max()) if ref_.numel() else 0.0
            size = max(1, ref_.numel())
            # sums of up to B OH OW (weight) or C_in KH KW (grad_output) products: 2e-5 size^(1/4) relative
            rel = (2e-5 * size ** 0.25) if dtype == F32 else 1e-10
            check_close(got, _rounded(ref_, dtype), rel * big * (1 + scale), rel, name)
