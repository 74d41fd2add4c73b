"""Every check on every fused op, from the declarations in ``_opinfo.py``: the float64 spec and the naive
implementation, layouts, empty batch and batch of one, non-finite inputs, inputs left alone, half precision,
opcheck, gradcheck over seeds, double backward (works, or a clear error; never a silent zero),
``torch.compile(fullgraph=True)``, and CPU against CUDA. Op-specific properties (the ball and the box, the
linearised boundary, bad-input messages, ...) stay in the per-op test files."""
from __future__ import annotations

import functools

import pytest
import torch

from tests.conftest import devices
from tests.ops._opinfo import OPS, OpInfo, Sample, assert_close

F32, F64 = torch.float32, torch.float64
DTYPES = [F32, F64]


def _op_params(predicate=lambda op: True):
    return [pytest.param(op, id=op.name) for op in OPS if predicate(op)]


def _case_params(predicate=lambda op: True, layouts=True):
    out = []
    for op in OPS:
        if not predicate(op):
            continue
        for i in range(len(op.cases)):
            for layout in (op.layouts if layouts else ("contiguous",)):
                out.append(pytest.param(op, i, layout, id=f"{op.name}-{i}-{layout}"))
    return out


@functools.lru_cache(maxsize=None)
def _expected(op_name: str, case: int, batch):
    """The spec's and the naive implementation's outputs for one case, computed once: they read float64
    copies of the case's values, which are the same for every device, layout and dtype (the cases hold
    float32-representable values)."""
    op = next(o for o in OPS if o.name == op_name)
    sample = op.make(op.cases[case], "cpu", F64, "contiguous", seed=case, batch=batch)
    return op.reference(sample.clone()), op.naive(sample.clone())


def _check_against_spec(op: OpInfo, got: dict, ref: dict, naive: dict, dtype):
    assert set(ref) <= set(got), f"{op.name}: outputs {sorted(ref)} expected, got {sorted(got)}"
    for key in ref:
        if ref[key].is_floating_point() and key != "selection":
            assert got[key].dtype == dtype, f"{op.name}: {key} is {got[key].dtype}, not {dtype}"
        assert_close(ref[key], naive[key], *op.naive_tol, what=f"{op.name} spec vs naive: {key}")
        assert_close(got[key], ref[key], *op.tolerance(key, dtype), what=f"{op.name} {dtype}: {key}",
                     exact=key in op.exact)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, case, layout", _case_params())
def test_matches_spec_and_naive(op, case, layout, dtype, device, one_thread):
    sample = op.make(op.cases[case], device, dtype, layout, seed=case)
    ref, naive = _expected(op.name, case, None)
    _check_against_spec(op, op.run(sample), ref, naive, dtype)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("batch", [0, 1])
@pytest.mark.parametrize("op, case, layout", _case_params(layouts=False))
def test_empty_batch_and_batch_of_one(op, case, layout, batch, device, one_thread):
    sample = op.make(op.cases[case], device, F64, layout, seed=case, batch=batch)
    ref, naive = _expected(op.name, case, batch)
    _check_against_spec(op, op.run(sample), ref, naive, F64)  # shapes included


def _non_finite_params():
    out = []
    for op in OPS:
        for i, sample in enumerate(op.non_finite("cpu", F64)):
            for against in ("spec", "naive") if op.naive_non_finite else ("spec",):
                marks = ()
                if against == "spec" and sample.name in op.spec_wrong:
                    marks = pytest.mark.xfail(strict=True, reason=op.spec_wrong[sample.name])
                out.append(pytest.param(op, i, against, marks=marks, id=f"{op.name}-{sample.name}-{against}"))
    return out


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, index, against", _non_finite_params())
def test_non_finite_inputs(op, index, against, dtype, device, one_thread):
    """inf and NaN inputs give what the spec and the naive implementation give (NaN where they give NaN)."""
    sample = op.non_finite(device, dtype)[index]
    want = (op.reference if against == "spec" else op.naive)(sample.clone())
    got = op.run(sample.clone())
    for key in want:
        assert_close(got[key], want[key], *op.tolerance(key, dtype), what=f"{op.name} [{sample.name}]: {key}",
                     exact=key in op.exact)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("op", _op_params(lambda op: not op.in_place))
def test_out_of_place_ops_leave_their_inputs_alone(op, device, one_thread):
    sample = op.make(op.cases[0], device, F32, op.layouts[-1], seed=0)
    before = {k: (v.clone(), v.stride(), v.data_ptr()) for k, v in sample.tensors.items() if v is not None}
    op.run(sample)
    for key, (value, stride, ptr) in before.items():
        now = sample.tensors[key]
        assert torch.equal(now, value), f"{op.name} wrote to its input {key}"
        assert now.stride() == stride and now.data_ptr() == ptr


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("op", _op_params())
def test_half_precision(op, device, one_thread):
    """Ops that take float16/bfloat16 stay near the spec (2e-2 relative: half has 11 significant bits and
    the kernels accumulate in float32; a tighter bound against PyTorch's own half error is in the op's own
    file); the others refuse half precision with an error naming the argument."""
    sample = op.make(op.cases[1], device, F32, "contiguous", seed=1)
    for dtype in (torch.float16, torch.bfloat16):
        low = sample.to(dtype=dtype)
        if not op.supports_half:
            with pytest.raises((RuntimeError, ValueError, TypeError), match=op.half_error):
                op.run(low)
            continue
        got = op.run(low)
        ref = op.reference(low.clone())
        for key in ref:
            assert got[key].dtype == dtype, f"{op.name}: {key} is {got[key].dtype}, not {dtype}"
            assert_close(got[key], ref[key], 2e-2, 2e-2, what=f"{op.name} {dtype}: {key}")


def _opcheck_samples(op, device):
    """The declared cases, alternately in float32 and float64."""
    return [op.make(op.cases[i], device, DTYPES[j % 2], "contiguous", seed=i) for j, i in enumerate(op.opcheck_cases)]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("op", _op_params(lambda op: op.name != "ensemble_temperature_ce_grad"))
def test_opcheck(op, device, one_thread):
    for sample in _opcheck_samples(op, device):
        for overload, args in op.opcheck_args(sample):
            torch.library.opcheck(overload, args, test_utils=op.opcheck_utils)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("op", _op_params(lambda op: bool(op.differentiable)))
def test_gradcheck(op, seed, device, one_thread):
    sample = op.make(op.small_case, device, F64, "contiguous", seed=seed)
    inputs = [sample.tensors[name].detach().requires_grad_(True) for name in op.differentiable]
    assert torch.autograd.gradcheck(lambda *xs: op.forward(sample, *xs), inputs)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("op", _op_params(lambda op: bool(op.differentiable)))
def test_double_backward_works_or_raises(op, device, one_thread):
    """Gradients of gradients are right (gradgradcheck), or differentiating the gradient raises the op's
    clear error; a silent zero (an unregistered backward's warning and 0.0) fails both branches."""
    sample = op.make(op.small_case, device, F64, "contiguous", seed=0)
    inputs = [sample.tensors[name].detach().requires_grad_(True) for name in op.differentiable]
    fn = lambda *xs: op.forward(sample, *xs)  # noqa: E731
    if op.double_backward == "works":
        assert torch.autograd.gradgradcheck(fn, inputs)
        return
    assert op.double_backward == "raises"
    out = fn(*inputs)
    grads = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    with pytest.raises(RuntimeError, match=op.double_backward_error):
        torch.autograd.grad(sum(g.square().sum() for g in grads), inputs, allow_unused=True)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("op", _op_params(lambda op: not op.differentiable))
def test_not_differentiable_ops_do_not_fake_a_gradient(op, device, one_thread):
    """In-place steps and the direct gradient are not differentiable: when a read-only input requires grad,
    a backward from the outputs to it raises instead of returning zeros."""
    sample = op.make(op.cases[0], device, F64, "contiguous", seed=0)
    name = op.grad_probe
    sample.tensors[name] = sample.tensors[name].detach().requires_grad_(True)
    got = op.run(sample)
    with pytest.raises(RuntimeError, match="does not require grad|appears to not have been used in the graph"):
        torch.autograd.grad(sum(v.double().sum() for v in got.values() if v.is_floating_point()),
                            sample.tensors[name])


def _compiled_outputs(op: OpInfo, sample: Sample, backend: str):
    """The op's outputs eager and under torch.compile(fullgraph=True). Differentiable ops compile their
    forward (AOT autograd compiles the backward with it) and take the vector-Jacobian product outside."""
    torch._dynamo.reset()
    names = [k for k, v in sample.tensors.items() if v is not None]
    if op.differentiable:
        def fn(*tensors):
            s = Sample(dict(zip(names, tensors)), sample.hyper)
            return op.forward(s, *(s.tensors[n] for n in op.differentiable))

        def outputs(f, s):
            inputs = [s.tensors[n].detach().requires_grad_(True) for n in op.differentiable]
            fresh = Sample(dict(s.tensors, **dict(zip(op.differentiable, inputs))), s.hyper)
            out = f(*(fresh.tensors[n] for n in names))
            grads = torch.autograd.grad(out, inputs, s.tensors["cotangent"] if out.dim() == 1 or
                                        out.shape == s.tensors["cotangent"].shape else torch.ones_like(out))
            return {"out": out.detach(), **{f"grad_{n}": g for n, g in zip(op.differentiable, grads)}}
        compiled = torch.compile(fn, fullgraph=True, backend=backend)
        return outputs(fn, sample.clone()), outputs(compiled, sample.clone())

    def fn(*tensors):
        return op.run(Sample(dict(zip(names, tensors)), sample.hyper))
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    eager_sample, comp_sample = sample.clone(), sample.clone()
    eager = fn(*(eager_sample.tensors[n] for n in names))
    comp = compiled(*(comp_sample.tensors[n] for n in names))
    return eager, comp


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("op", _op_params())
def test_compile_fullgraph_matches_eager(op, device, one_thread):
    """Traced in one graph (the fake kernels, the mutation annotations and the autograd registration) and
    bitwise equal to eager: aot_eager runs the same kernels. Inductor's code generation is in the slow test."""
    sample = op.make(op.cases[1], device, F32, "contiguous", seed=1)
    eager, comp = _compiled_outputs(op, sample, "aot_eager")
    for key in eager:
        assert_close(comp[key], eager[key].detach().cpu(), 0, 0, what=f"{op.name} compiled: {key}")


@pytest.mark.slow
@pytest.mark.parametrize("op", _op_params(lambda op: op.name in ("conv2d_input_grad", "deepfool_step",
                                                                 "sign_momentum_step")))
def test_compile_inductor_matches_eager(op, one_thread):
    """Inductor (C++ code generation around the extern kernel; ~20-50 s a compile on a loaded 2-core
    machine, hence slow). Its fused pointwise epilogues may round differently: the op's tolerance."""
    sample = op.make(op.cases[1], "cpu", F32, "contiguous", seed=1)
    eager, comp = _compiled_outputs(op, sample, "inductor")
    for key in eager:
        assert_close(comp[key], eager[key].detach().double(), *op.tolerance(key, F32), what=f"{op.name} inductor: {key}")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, case, layout", _case_params(layouts=False))
def test_cpu_matches_cuda(op, case, layout, dtype, one_thread):
    """The two devices' kernels on the same values: equal within the op's tolerance (each is that close to
    the spec), integer outputs exactly."""
    cpu = op.make(op.cases[case], "cpu", dtype, layout, seed=case)
    got_cpu, got_cuda = op.run(cpu.clone()), op.run(cpu.to("cuda"))
    for key in got_cpu:
        assert got_cuda[key].device.type == "cuda" or key == "selection"
        want = got_cpu[key].detach()
        rtol, atol = op.tolerance(key, dtype)
        assert_close(got_cuda[key], want.double() if want.is_floating_point() else want, 2 * rtol, 2 * atol,
                     what=f"{op.name} cuda vs cpu: {key}", exact=key in op.exact)
