"""One OpInfo-style declaration per fused op (the ``sample_inputs`` pattern of torch's OpInfo and of
extension-cpp's tests). ``test_opinfo.py`` runs the same checks on every entry of ``OPS``; ``test_fuzz.py``
draws random inputs for the same ops and reuses the tolerances declared here.

Each declaration gives:
- ``cases``: the sample space (shapes, hyperparameters); ``sample_inputs(device, dtype, layout)`` builds one
  ``Sample`` per case, and ``make(case, ...)`` one of them (``batch=`` overrides the case's batch size);
- ``run``: the public op (``robustkit.ops``), returning every output it writes or returns, and the
  vector-Jacobian product with a fixed cotangent where it is differentiable;
- ``reference``: the same quantities from the float64 spec ``robustkit/ops/reference.py``;
- ``naive``: the same from the implementation written from the paper in ``tests/reference/``;
- tolerances (``tol`` for the op against the spec, ``naive_tol`` for the spec against the naive one), each
  with the reason for its size;
- flags: in place, differentiable inputs, half precision, double backward ("works" or "raises"), layouts;
- ``opcheck_args``: the raw ``torch.ops.robustkit`` calls that ``torch.library.opcheck`` checks;
- ``non_finite``: inputs with inf/NaN, each compared with the spec (NaN equal to NaN).

Comparisons: every float output is compared in float64 as ``|got - want| <= atol + rtol |want|``. Integer
and bool outputs (indices, best-so-far selections) must match exactly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import robustkit.ops as ops
from robustkit.ops import reference
from tests.reference import fused_ops as naive_ops

F32, F64 = torch.float32, torch.float64


@dataclasses.dataclass
class Sample:
    """The tensors of one op call (``tensors``) and its non-tensor arguments (``hyper``)."""
    tensors: Dict[str, Optional[Tensor]]
    hyper: dict
    name: str = ""

    def clone(self) -> "Sample":
        return Sample({k: (None if v is None else v.clone()) for k, v in self.tensors.items()}, dict(self.hyper),
                      self.name)

    def to(self, device=None, dtype=None) -> "Sample":
        """A copy on ``device`` / in ``dtype`` (floating tensors only); layouts are not kept (contiguous)."""
        def move(t):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else t.dtype)
        hyper = {k: (move(v) if isinstance(v, Tensor) else v) for k, v in self.hyper.items()}
        return Sample({k: move(v) for k, v in self.tensors.items()}, hyper, self.name)

    @property
    def batch(self) -> int:
        return next(t for t in self.tensors.values() if t is not None).shape[0]


@dataclasses.dataclass
class OpInfo:
    name: str
    overloads: Sequence  # the torch.ops.robustkit overloads this entry exercises (for opcheck)
    cases: List[dict]
    make: Callable[..., Sample]  # make(case, device, dtype, layout, seed, batch=None)
    run: Callable[[Sample], Dict[str, Tensor]]
    reference: Callable[[Sample], Dict[str, Tensor]]
    naive: Callable[[Sample], Dict[str, Tensor]]
    tol: Dict[torch.dtype, Tuple[float, float]]  # (rtol, atol) of the op against the float64 spec
    naive_tol: Tuple[float, float]  # (rtol, atol) of the spec against the naive implementation
    layouts: Tuple[str, ...]
    in_place: bool
    differentiable: Tuple[str, ...]  # tensor names gradients flow to; () for none
    forward: Optional[Callable[..., Tensor]]  # forward(sample, *differentiable tensors) -> Tensor (gradcheck)
    double_backward: Optional[str]  # "works", "raises" or None (not differentiable)
    double_backward_error: str  # regex the "raises" error must match
    supports_half: bool
    half_error: str  # regex the error for a float16 input must match, when not supports_half
    opcheck_args: Callable[[Sample], List[tuple]]
    opcheck_utils: Tuple[str, ...]
    non_finite: Callable[[str, torch.dtype], List[Sample]]
    small_case: Optional[dict] = None  # a small case for gradcheck and double backward
    grad_probe: str = ""  # a read-only input of a non-differentiable op, set to require grad
    opcheck_cases: Tuple[int, ...] = (0,)
    # non-finite samples (by name) where robustkit/ops/reference.py is known to be wrong: reason. The op must
    # still match the naive implementation there; the spec comparison is xfail(strict) until it is fixed.
    spec_wrong: Dict[str, str] = dataclasses.field(default_factory=dict)
    # whether the naive implementation follows the op's documented non-finite conventions (then the op must
    # match it on non-finite inputs too); the paper formulas of some ops say nothing about NaN.
    naive_non_finite: bool = True
    exact: Tuple[str, ...] = ()  # outputs that must match the spec exactly (indices, selections)
    output_tol: Dict[str, Dict[torch.dtype, Tuple[float, float]]] = dataclasses.field(default_factory=dict)

    def tolerance(self, key: str, dtype) -> Tuple[float, float]:
        """(rtol, atol) of output ``key`` in ``dtype``: the op's, unless that output declares its own."""
        return self.output_tol.get(key, self.tol)[dtype]

    def sample_inputs(self, device, dtype, layout="contiguous", batch=None) -> List[Sample]:
        return [self.make(case, device, dtype, layout, seed=i, batch=batch) for i, case in enumerate(self.cases)]

    def __repr__(self):  # test ids
        return self.name


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _f32(t: Tensor) -> Tensor:
    """float64 values that float32 represents exactly, so that a case has the same values in both dtypes
    (and the spec and the naive implementation are computed once per case)."""
    return t.float().double() if t.is_floating_point() else t


def _vjp(output: Tensor, inputs: Sequence[Tensor], cotangent: Tensor) -> List[Tensor]:
    return list(torch.autograd.grad(output, inputs, cotangent, allow_unused=False))


def assert_close(got: Tensor, want: Tensor, rtol: float, atol: float, what: str, exact: bool = False):
    """``got`` (any dtype and device) against ``want`` (float64 or integer, CPU); NaN equals NaN."""
    got = got.detach().cpu()
    assert got.shape == want.shape, f"{what}: shape {list(got.shape)} != {list(want.shape)}"
    if exact or not want.is_floating_point():
        assert torch.equal(got.to(want.dtype), want), f"{what}: not equal"
        return
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}")


def _layout(t: Tensor, layout: str, *, transpose_dims=(-1, -2), permute=None) -> Tensor:
    """The same values in another memory layout: ``channels_last`` (4-D), ``transposed`` (a view whose two
    dims ``transpose_dims`` are swapped in memory, or ``permute``), ``strided`` (every other element of the
    last dim of a buffer twice as wide)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        if permute is not None:
            inverse = [permute.index(i) for i in range(len(permute))]
            return t.permute(*permute).contiguous().permute(*inverse)
        a, b = transpose_dims
        return t.transpose(a, b).contiguous().transpose(a, b)
    if layout == "strided":
        return torch.stack([t, t], dim=-1).flatten(-2)[..., ::2]
    raise ValueError(layout)


# ----------------------------------------------------------------------------------------------------------
# ensemble_temperature_ce (and ensemble_temperature_ce_grad, which shares its kernels)

def _ce_make(case, device, dtype, layout, seed, batch=None):
    k, b, c = case["shape"]
    b = b if batch is None else batch
    g = _gen(seed)
    z = torch.randn(k, b, c, generator=g, dtype=F64) * case.get("scale", 3.0)
    y = torch.randint(0, c, (b,), generator=g)
    if b >= 2:  # the range edges of the target
        y[0], y[-1] = 0, c - 1
    z, cot = _f32(z), _f32(torch.rand(b, generator=g, dtype=F64) + 0.5)
    z = _layout(z.to(device=device, dtype=dtype), layout, permute=[1, 0, 2])
    return Sample({"logits": z, "target": y.to(device), "cotangent": cot.to(device=device, dtype=dtype)},
                  dict(case["hyper"]), f"{case['shape']}")


def _ce_run(s):
    z = s.tensors["logits"].detach().requires_grad_(True)
    loss = ops.ensemble_temperature_ce(z, s.tensors["target"], reduction="none", **s.hyper)
    (grad,) = _vjp(loss, [z], s.tensors["cotangent"])
    return {"loss": loss, "grad_logits": grad}


def _ce_reference(s):
    s = s.to("cpu")
    z, y = s.tensors["logits"], s.tensors["target"]
    return {"loss": reference.ensemble_temperature_ce(z, y, **s.hyper),
            "grad_logits": reference.ensemble_temperature_ce_grad(z, y, s.tensors["cotangent"], **s.hyper)}


def _ce_naive(s):
    s = s.to("cpu")
    z, y, h = s.tensors["logits"], s.tensors["target"], s.hyper
    args = (h["temperature"], h["soft_weight"], h["hard_weight"])
    grad = naive_ops.naive_ensemble_ce_grad(z, y, *args) * s.tensors["cotangent"].double().view(1, -1, 1)
    return {"loss": naive_ops.naive_ensemble_ce(z, y, *args), "grad_logits": grad}


def _ce_hyper_args(s):
    h = s.hyper
    return (float(h["temperature"]), float(h["soft_weight"]), float(h["hard_weight"]))


def _ce_opcheck(s):
    z, y = s.tensors["logits"], s.tensors["target"]
    loss, stats = torch.ops.robustkit.ensemble_temperature_ce(z, y, *_ce_hyper_args(s))
    return [(torch.ops.robustkit.ensemble_temperature_ce.default, (z.detach().requires_grad_(True), y,
                                                                   *_ce_hyper_args(s))),
            (torch.ops.robustkit._ensemble_temperature_ce_backward.default,
             (torch.ones_like(loss), z.detach(), y, stats, *_ce_hyper_args(s)))]


def _ce_non_finite(device, dtype):
    out = []
    for value, where in ((math.inf, "the target logit"), (math.inf, "another logit"), (-math.inf, "another logit"),
                         (math.nan, "another logit")):
        s = _ce_make(dict(shape=(2, 3, 5), hyper=dict(temperature=2.0, soft_weight=1.0, hard_weight=0.5)),
                     device, dtype, "contiguous", seed=17)
        y = int(s.tensors["target"][1])
        s.tensors["logits"][0, 1, y if where == "the target logit" else (y + 1) % 5] = value
        s.name = f"{value} in {where}"
        out.append(s)
    return out


_CE_CASES = [dict(shape=shape, hyper=hyper)
             for shape in [(1, 1, 10), (1, 7, 10), (3, 5, 1000), (8, 3, 10), (4, 1, 1000), (2, 5, 1)]
             for hyper in [dict(temperature=1.0, soft_weight=1.0, hard_weight=0.0),
                           dict(temperature=16.0, soft_weight=1.0, hard_weight=1.0),
                           dict(temperature=0.5, soft_weight=0.3, hard_weight=2.0)]]

ENSEMBLE_CE = OpInfo(
    name="ensemble_temperature_ce",
    overloads=(torch.ops.robustkit.ensemble_temperature_ce, torch.ops.robustkit._ensemble_temperature_ce_backward),
    cases=_CE_CASES, make=_ce_make, run=_ce_run, reference=_ce_reference, naive=_ce_naive,
    # float32: the loss is a logsumexp of C terms accumulated in float32 (relative error ~ C eps32 at worst
    # with compensated exp, ~ 1e-6 here) of values |z| ~ 10, so 1e-5 absolute and relative is ~10 ulp of
    # headroom over the measured worst (3e-6). float64: the same computation's ~1e-14, with margin.
    tol={F32: (1e-5, 1e-5), F64: (1e-10, 1e-10)},
    # spec and naive are both float64 and differ only in summation order: a few ulp of sums of ~20 terms.
    naive_tol=(1e-12, 1e-12),
    layouts=("contiguous", "transposed", "strided"),
    in_place=False, differentiable=("logits",),
    forward=lambda s, z: ops.ensemble_temperature_ce(z, s.tensors["target"], reduction="none", **s.hyper),
    double_backward="raises", double_backward_error=r"robustkit::_ensemble_temperature_ce_backward.*double backward",
    supports_half=True, half_error="",
    opcheck_args=_ce_opcheck, opcheck_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                             "test_aot_dispatch_dynamic"),
    non_finite=_ce_non_finite,
    small_case=dict(shape=(3, 4, 7), hyper=dict(temperature=2.5, soft_weight=0.7, hard_weight=1.3)),
    opcheck_cases=(0,),
)


def _ce_grad_run(s):
    scale = s.hyper.get("scale", 1.0)
    h = {k: v for k, v in s.hyper.items() if k != "scale"}
    got = ops.ensemble_temperature_ce_grad(s.tensors["logits"], s.tensors["target"], scale=scale, **h)
    assert not got.requires_grad
    return {"grad_logits": got}


def _ce_grad_reference(s):
    s = s.to("cpu")
    h = {k: v for k, v in s.hyper.items() if k != "scale"}
    ones = torch.full((s.tensors["target"].shape[0],), float(s.hyper.get("scale", 1.0)), dtype=F64)
    return {"grad_logits": reference.ensemble_temperature_ce_grad(s.tensors["logits"], s.tensors["target"], ones, **h)}


def _ce_grad_naive(s):
    s = s.to("cpu")
    h = s.hyper
    grad = naive_ops.naive_ensemble_ce_grad(s.tensors["logits"], s.tensors["target"], h["temperature"],
                                            h["soft_weight"], h["hard_weight"])
    return {"grad_logits": h.get("scale", 1.0) * grad}


ENSEMBLE_CE_GRAD = dataclasses.replace(
    ENSEMBLE_CE, name="ensemble_temperature_ce_grad",
    overloads=(torch.ops.robustkit.ensemble_temperature_ce, torch.ops.robustkit._ensemble_temperature_ce_backward),
    cases=[dict(c, hyper=dict(c["hyper"], scale=sc)) for c in _CE_CASES[::2] for sc in (1.0, -1.0)],
    run=_ce_grad_run, reference=_ce_grad_reference, naive=_ce_grad_naive,
    # the same kernels as the loss's backward: the same bounds.
    in_place=False, differentiable=(), forward=None, double_backward=None, grad_probe="logits",
)


# ----------------------------------------------------------------------------------------------------------
# sign_momentum_step

def _sign_make(case, device, dtype, layout, seed, batch=None):
    shape = tuple(case["shape"]) if batch is None else (batch,) + tuple(case["shape"][1:])
    g = _gen(seed)
    x = torch.rand(shape, generator=g, dtype=F64)
    x_adv = (x + 0.03 * torch.randn(shape, generator=g, dtype=F64)).clamp(0, 1)
    grad = torch.randn(shape, generator=g, dtype=F64)
    momentum = torch.randn(shape, generator=g, dtype=F64) * 1e-3 if case["momentum"] else None
    b = shape[0]
    hyper = dict(decay=case["decay"], grad_norm=case["grad_norm"], norm=case["norm"], clip=case.get("clip", (0.0, 1.0)))
    if case.get("per_sample"):  # per-sample step and radius, with a zero radius in row 0 (a range edge)
        step = _f32(torch.rand(b, generator=g, dtype=F64) * 0.02 + 0.005)
        eps = _f32(torch.rand(b, generator=g, dtype=F64) * 0.05 + 0.01)
        if b:
            eps[0] = 0.0
        hyper.update(step_size=step.to(device=device, dtype=dtype), eps=eps.to(device=device, dtype=dtype))
    else:
        hyper.update(step_size=case.get("step_size", 0.01), eps=case.get("eps", 0.03))

    def put(t):
        return None if t is None else _layout(_f32(t).to(device=device, dtype=dtype), layout)
    tensors = {"x_adv": put(x_adv), "x_orig": put(x), "grad": put(grad), "momentum": put(momentum)}
    return Sample(tensors, hyper, f"{shape} {case['norm']} {case['grad_norm']}")


def _sign_run(s):
    t = s.tensors
    strides = t["x_adv"].stride()
    x, m = ops.sign_momentum_step(t["x_adv"], t["x_orig"], t["grad"], t["momentum"], **s.hyper)
    assert x is t["x_adv"] and m is t["momentum"], "sign_momentum_step must return its in-place buffers"
    assert x.stride() == strides, "sign_momentum_step changed x_adv's layout"
    return {"x_adv": x} if m is None else {"x_adv": x, "momentum": m}


def _sign_reference(s):
    s = s.to("cpu")
    t = s.tensors
    x, m = reference.sign_momentum_step(t["x_adv"], t["x_orig"], t["grad"], t["momentum"], **s.hyper)
    return {"x_adv": x} if m is None else {"x_adv": x, "momentum": m}


def _sign_naive(s):
    s = s.to("cpu")
    t, h = s.tensors, s.hyper
    x, m = naive_ops.naive_sign_momentum_step(t["x_adv"], t["x_orig"], t["grad"], t["momentum"], h["step_size"],
                                              h["eps"], h["decay"], h["grad_norm"], h["norm"], h["clip"])
    return {"x_adv": x} if m is None else {"x_adv": x, "momentum": m}


def _sign_raw(s):
    t, h = s.tensors, s.hyper
    step_t = h["step_size"] if isinstance(h["step_size"], Tensor) else None
    eps_t = h["eps"] if isinstance(h["eps"], Tensor) else None
    lo, hi = (-math.inf, math.inf) if h["clip"] is None else h["clip"]
    return (t["x_adv"].clone(), t["x_orig"], t["grad"], None if t["momentum"] is None else t["momentum"].clone(),
            step_t, eps_t, 0.0 if step_t is not None else float(h["step_size"]),
            0.0 if eps_t is not None else float(h["eps"]), float(h["decay"]), h["grad_norm"], h["norm"],
            float(lo), float(hi))


def _sign_non_finite(device, dtype):
    out = []
    for norm in ("linf", "l2"):
        for value in (math.nan, math.inf):
            for grad_norm in ("l1", "none"):
                s = _sign_make(dict(shape=(3, 2, 4, 4), norm=norm, grad_norm=grad_norm, decay=1.0, momentum=True),
                               device, dtype, "contiguous", seed=23)
                s.tensors["x_adv"].copy_((s.tensors["x_orig"] + 0.01 * torch.rand_like(s.tensors["x_orig"])).clamp(0, 1))
                s.tensors["grad"][0, 0, 1, 1] = value
                s.name = f"{value} in grad, {norm}, grad_norm={grad_norm}"
                out.append(s)
    return out


SIGN_STEP = OpInfo(
    name="sign_momentum_step",
    overloads=(torch.ops.robustkit.sign_momentum_step_,),
    cases=[dict(shape=shape, norm=norm, grad_norm=gn, decay=decay, momentum=mom, per_sample=(shape[0] == 5))
           for shape in [(1, 3, 5, 4), (5, 3, 8, 7)]
           for norm in ("linf", "l2")
           for gn, decay, mom in [("l1", 1.0, True), ("none", 0.0, True), ("l1", 0.0, False), ("none", 0.5, True)]]
    + [dict(shape=(2, 1, 3, 5), norm=n, grad_norm="none", decay=0.0, momentum=False, clip=None, step_size=0.1,
            eps=0.1) for n in ("linf", "l2")],
    make=_sign_make, run=_sign_run, reference=_sign_reference, naive=_sign_naive,
    # float32: x_adv moves by step_size and is projected: each output element is a few float32 roundings of
    # values <= 1 (|x| + step + eps), so 2e-6 absolute (~16 ulp at 1) and 1e-6 relative; the L2 norms are
    # float32 sums of <= 168 squares here, well inside that. float64: the same roundings, ~1e-15.
    tol={F32: (1e-6, 2e-6), F64: (1e-12, 1e-12)},
    naive_tol=(1e-12, 1e-12),
    layouts=("contiguous", "channels_last", "transposed", "strided"),
    in_place=True, differentiable=(), forward=None, double_backward=None, double_backward_error="",
    supports_half=False, half_error="x_adv must be float32 or float64",
    opcheck_args=lambda s: [(torch.ops.robustkit.sign_momentum_step_.default, _sign_raw(s))],
    opcheck_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
    non_finite=_sign_non_finite, grad_probe="grad",
    naive_non_finite=False,  # "a NaN L2 increment is no move" is the op's convention, not MI-FGSM's
    # per-sample step and radius with momentum, scalar ones without, each for linf and l2
    opcheck_cases=(8, 12, 2, 6),
)


# ----------------------------------------------------------------------------------------------------------
# deepfool_step

def _df_make(case, device, dtype, layout, seed, batch=None):
    b, k, d = case["shape"]
    b = b if batch is None else batch
    g = _gen(seed)
    f = torch.randn(b, k, generator=g, dtype=F64)
    w = torch.randn(b, k, d, generator=g, dtype=F64)
    if case.get("zero_row") and b:  # an all-zero gradient row: the norm floor
        w[0, 0] = 0.0
    f, w, cot = _f32(f), _f32(w), _f32(torch.randn(b, d, generator=g, dtype=F64))
    f = _layout(f.to(device=device, dtype=dtype), layout, transpose_dims=(0, 1))
    w = _layout(w.to(device=device, dtype=dtype), layout, permute=[1, 0, 2])
    return Sample({"f": f, "w": w, "cotangent": cot.to(device=device, dtype=dtype)}, dict(norm=case["norm"]),
                  f"{(b, k, d)} {case['norm']}")


def _df_run(s):
    f = s.tensors["f"].detach().requires_grad_(True)
    w = s.tensors["w"].detach().requires_grad_(True)
    step, index = ops.deepfool_step(f, w, **s.hyper)
    grad_f, grad_w = _vjp(step, [f, w], s.tensors["cotangent"])
    return {"step": step, "index": index, "grad_f": grad_f, "grad_w": grad_w}


def _df_reference(s):
    s = s.to("cpu")
    f = s.tensors["f"].double().requires_grad_(True)
    w = s.tensors["w"].double().requires_grad_(True)
    step, index = reference.deepfool_step(f, w, **s.hyper)
    if step.numel() == 0:
        return {"step": step.detach(), "index": index, "grad_f": torch.zeros_like(f), "grad_w": torch.zeros_like(w)}
    grad_f, grad_w = _vjp(step, [f, w], s.tensors["cotangent"].double())
    return {"step": step.detach(), "index": index, "grad_f": grad_f, "grad_w": grad_w}


def _df_naive(s):
    s = s.to("cpu")
    f = s.tensors["f"].double().requires_grad_(True)
    w = s.tensors["w"].double().requires_grad_(True)
    step, index = naive_ops.naive_deepfool_step(f, w, s.hyper["norm"])
    if step.numel() == 0:
        return {"step": step.detach(), "index": index, "grad_f": torch.zeros_like(f), "grad_w": torch.zeros_like(w)}
    grads = torch.autograd.grad(step, [f, w], s.tensors["cotangent"].double(), allow_unused=True)
    grad_f, grad_w = (torch.zeros_like(t) if gr is None else gr for gr, t in zip(grads, (f, w)))
    return {"step": step.detach(), "index": index, "grad_f": grad_f, "grad_w": grad_w}


def _df_non_finite(device, dtype):
    out = []
    for where, value in (("f", math.nan), ("f", math.inf), ("w", math.nan), ("w", math.inf)):
        s = _df_make(dict(shape=(3, 4, 6), norm="l2"), device, dtype, "contiguous", seed=29)
        if where == "f":
            s.tensors["f"][1, 2] = value
        else:
            s.tensors["w"][1, 2, 3] = value
        s.name = f"{value} in {where}"
        out.append(s)
    return out


DEEPFOOL_STEP = OpInfo(
    name="deepfool_step",
    overloads=(torch.ops.robustkit.deepfool_step,),
    cases=[dict(shape=shape, norm=norm) for shape in [(7, 9, 784), (1, 1, 5), (3, 4, 1), (16, 2, 300)]
           for norm in ("l2", "linf")] + [dict(shape=(4, 3, 8), norm=n, zero_row=True) for n in ("l2", "linf")],
    make=_df_make, run=_df_run, reference=_df_reference, naive=_df_naive,
    # float32: the step is (|f| + 1e-4) / ||w||^2 * w with ||w||^2 a float32 sum of D <= 784 squares; its
    # relative error grows like sqrt(D) eps32 (~3e-6 at D = 784), so 1e-5 relative; the backward has the same
    # sums plus <g, w>: 1e-5 relative, 1e-5 absolute for near-zero entries. float64: ~1e-14 with margin.
    tol={F32: (1e-5, 1e-6), F64: (1e-12, 1e-14)},
    # the backward's sums <g, w_l> over D terms: the same relative bound, absolute 1e-5 / 1e-12 for the
    # near-zero entries that cancellation leaves.
    output_tol={k: {F32: (1e-5, 1e-5), F64: (1e-11, 1e-12)} for k in ("grad_f", "grad_w")},
    naive_tol=(1e-12, 1e-14),
    layouts=("contiguous", "transposed", "strided"),
    in_place=False, differentiable=("f", "w"),
    forward=lambda s, f, w: ops.deepfool_step(f, w, **s.hyper)[0],
    double_backward="raises", double_backward_error=r"robustkit::_deepfool_step_backward.*double backward",
    supports_half=False, half_error="f must be float32 or float64",
    opcheck_args=lambda s: [(torch.ops.robustkit.deepfool_step.default,
                             (s.tensors["f"].detach().requires_grad_(True), s.tensors["w"].detach().requires_grad_(True),
                              s.hyper["norm"]))],
    opcheck_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
    # "nan in w" puts the NaN in an unchosen candidate: the step does not depend on that candidate, so its
    # gradient is 0 in the op, the spec and the naive step alike
    non_finite=_df_non_finite, exact=("index",),
    small_case=dict(shape=(3, 4, 6), norm="l2"), opcheck_cases=(0, 1),
)


# ----------------------------------------------------------------------------------------------------------
# cw_l2_step

CW_STATE = ("w", "x", "exp_avg", "exp_avg_sq", "best_adv", "best_l2sq")


def _cw_make(case, device, dtype, layout, seed, batch=None):
    shape = tuple(case["shape"]) if batch is None else (batch,) + tuple(case["shape"][1:])
    lo, hi = case["clip"]
    g = _gen(seed)
    b = shape[0]

    def rnd():
        return torch.randn(shape, generator=g, dtype=F64)
    w = _f32(rnd())
    t = {"w": w, "x": lo + (hi - lo) * (torch.tanh(w) + 1) / 2, "exp_avg": 0.1 * rnd(), "exp_avg_sq": 0.1 * rnd().abs(),
         "best_adv": torch.rand(shape, generator=g, dtype=F64),
         "best_l2sq": torch.rand(b, generator=g, dtype=F64) * shape[1] / 3,
         "x_orig": lo + (hi - lo) * torch.rand(shape, generator=g, dtype=F64), "loss_grad": rnd(),
         "success": torch.rand(b, generator=g) < 0.6}
    if b >= 2:  # one sample improves for sure, one cannot (its best is already 0)
        t["success"][0], t["best_l2sq"][0], t["best_l2sq"][-1] = True, math.inf, 0.0
    out = {}
    for k, v in t.items():
        # x = x(w) is computed in the sample's dtype, as the attack does (the op requires x = x(w) on entry)
        v = (v if k == "x" else _f32(v)).to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        # the in-place state must be contiguous (the op says so); the read-only inputs take any layout
        out[k] = _layout(v, layout, transpose_dims=(0, -1)) if k in ("x_orig", "loss_grad") and v.dim() > 1 else v
    return Sample(out, dict(step=case["step"], lr=case.get("lr", 0.05), betas=case.get("betas", (0.9, 0.999)),
                            clip=case["clip"]), f"{shape} step={case['step']}")


def _cw_selection(best_adv, x_in, old_best):
    """Per row: 1 where best_adv holds the iterate passed in, 0 where it kept the old best, -1 otherwise
    (the best-so-far rule copies one or the other bit for bit)."""
    def same(a, b):
        return (a == b).flatten(1).all(dim=1) if a.dim() > 1 else (a == b)
    return torch.where(same(best_adv, x_in), 1, torch.where(same(best_adv, old_best), 0, -1)).cpu()


def _cw_run(s):
    t = s.tensors
    x_in, old_best = t["x"].clone(), t["best_adv"].clone()
    l2sq = ops.cw_l2_step(t["w"], t["x"], t["exp_avg"], t["exp_avg_sq"], t["best_adv"], t["best_l2sq"], t["x_orig"],
                          t["loss_grad"], t["success"], **s.hyper)
    return dict({k: t[k] for k in CW_STATE}, l2sq=l2sq, selection=_cw_selection(t["best_adv"], x_in, old_best))


def _cw_reference(s):
    s = s.to("cpu")
    t = s.tensors
    r = reference.cw_l2_step(t["w"], t["x_orig"], t["loss_grad"], t["success"], t["exp_avg"], t["exp_avg_sq"],
                             t["best_adv"], t["best_l2sq"], **s.hyper)
    improved = t["success"] & (r["l2sq"] < t["best_l2sq"].double())
    return dict({k: r[k] for k in (*CW_STATE, "l2sq")}, selection=improved.long())


def _cw_naive(s):
    s = s.to("cpu")
    t, h = s.tensors, s.hyper
    out = naive_ops.naive_cw_l2_step(t["w"], t["x_orig"], t["loss_grad"], t["success"], t["exp_avg"],
                                     t["exp_avg_sq"], t["best_adv"], t["best_l2sq"], step=h["step"], lr=h["lr"],
                                     betas=h["betas"], adam_eps=1e-8, clip=h["clip"])
    out["selection"] = out.pop("improved").long()
    return out


def _cw_raw(s):
    t, h = s.tensors, s.hyper
    return tuple(t[k].clone() if k in CW_STATE else t[k] for k in (*CW_STATE, "x_orig", "loss_grad", "success")) + (
        h["step"], float(h["lr"]), float(h["betas"][0]), float(h["betas"][1]), 1e-8, float(h["clip"][0]),
        float(h["clip"][1]))


def _cw_non_finite(device, dtype):
    out = []
    for where, value in (("loss_grad", math.nan), ("loss_grad", math.inf), ("x_orig", math.nan)):
        s = _cw_make(dict(shape=(3, 6), step=2, clip=(0.0, 1.0)), device, dtype, "contiguous", seed=31)
        s.tensors[where][1, 2] = value
        s.name = f"{value} in {where}"
        out.append(s)
    return out


CW_STEP = OpInfo(
    name="cw_l2_step",
    overloads=(torch.ops.robustkit.cw_l2_step_,),
    cases=[dict(shape=(6, 3, 8, 8), step=1, clip=(0.0, 1.0)), dict(shape=(1, 10), step=7, clip=(-1.0, 2.0)),
           dict(shape=(9, 1, 28, 28), step=40, clip=(0.0, 1.0)), dict(shape=(5, 7), step=3, clip=(0.0, 1.0),
                                                                        betas=(0.5, 0.9), lr=0.5)],
    make=_cw_make, run=_cw_run, reference=_cw_reference, naive=_cw_naive,
    # float32: w moves by lr * m_hat / (sqrt(v_hat) + eps) <= ~lr per element, each term a few float32
    # roundings; x = tanh(w) mapped to the box. 1e-5 relative and 2e-6 absolute (~16 ulp at 1) cover them;
    # l2sq is a float32 sum of <= 784 squares (relative error ~ sqrt(784) eps32 = 3e-6). The review also found
    # the op's float32 Adam mixes 1 - float32(beta) with the exact double beta in the bias correction
    # (<= 2e-5 relative at beta2 = 0.999 in the step, far below lr here). float64: ~1e-14 with margin.
    tol={F32: (1e-5, 2e-6), F64: (1e-10, 1e-12)},
    # the naive one runs in Python floats (float64) element by element; the spec in vectorised float64.
    naive_tol=(1e-12, 1e-12),
    layouts=("contiguous", "transposed"),
    in_place=True, differentiable=(), forward=None, double_backward=None, double_backward_error="",
    supports_half=False, half_error="w must be float32 or float64",
    opcheck_args=lambda s: [(torch.ops.robustkit.cw_l2_step_.default, _cw_raw(s))],
    # the in-place outputs alias inputs, so the autograd and AOT dispatch checks do not apply (as before).
    opcheck_utils=("test_schema", "test_faketensor"),
    non_finite=_cw_non_finite, exact=("selection",), naive_non_finite=False, grad_probe="loss_grad", opcheck_cases=(0, 1),
)


# ----------------------------------------------------------------------------------------------------------
# conv2d_input_grad

def _conv_make(case, device, dtype, layout, seed, batch=None):
    b, c_in, c_out, (kh, kw), (ph, pw), (h, w) = case["shape"]
    b = b if batch is None else batch
    g = _gen(seed)
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    grad = torch.randn(b, c_out, oh, ow, generator=g, dtype=F64)
    weight = torch.randn(c_out, c_in, kh, kw, generator=g, dtype=F64)
    grad, weight, cot = _f32(grad), _f32(weight), _f32(torch.randn(b, c_in, h, w, generator=g, dtype=F64))
    grad = _layout(grad.to(device=device, dtype=dtype), layout)
    weight = _layout(weight.to(device=device, dtype=dtype), layout if layout != "strided" else "contiguous")
    return Sample({"grad_output": grad, "weight": weight, "cotangent": cot.to(device=device, dtype=dtype)},
                  dict(input_size=(h, w), padding=(ph, pw)), f"{case['shape']}")


def _conv_run(s):
    g = s.tensors["grad_output"].detach().requires_grad_(True)
    w = s.tensors["weight"].detach().requires_grad_(True)
    out = ops.conv2d_input_grad(g, w, **s.hyper)
    assert out.device == g.device
    if out.numel() == 0:
        d_g, d_w = torch.zeros_like(g), torch.zeros_like(w)
    else:
        d_g, d_w = _vjp(out, [g, w], s.tensors["cotangent"])
    # PyTorch's own convolution backward is a third, independent implementation of the same quantity.
    x = torch.zeros(g.shape[0], w.shape[1], *s.hyper["input_size"], dtype=g.dtype, device=g.device)
    torch_grad = torch.ops.aten.convolution_backward(g.detach(), x, w.detach(), None, [1, 1], list(s.hyper["padding"]),
                                                     [1, 1], False, [0, 0], 1, [True, False, False])[0]
    return {"grad_input": out, "grad_grad_output": d_g, "grad_weight": d_w, "torch_grad_input": torch_grad}


def _conv_grads(out, g, w, cot):
    if out.numel() == 0:
        return torch.zeros_like(g), torch.zeros_like(w)
    grads = torch.autograd.grad(out, [g, w], cot, allow_unused=True)
    return tuple(torch.zeros_like(t) if gr is None else gr for gr, t in zip(grads, (g, w)))


def _conv_reference(s):
    s = s.to("cpu")
    g = s.tensors["grad_output"].double().requires_grad_(True)
    w = s.tensors["weight"].double().requires_grad_(True)
    out = reference.conv2d_input_grad(g, w, **s.hyper)
    d_g, d_w = _conv_grads(out, g, w, s.tensors["cotangent"].double())
    return {"grad_input": out.detach(), "grad_grad_output": d_g, "grad_weight": d_w, "torch_grad_input": out.detach()}


def _conv_naive(s):
    s = s.to("cpu")
    g = s.tensors["grad_output"].double().requires_grad_(True)
    w = s.tensors["weight"].double().requires_grad_(True)
    out = naive_ops.naive_conv2d_input_grad(g, w, s.hyper["input_size"], s.hyper["padding"])
    d_g, d_w = _conv_grads(out, g, w, s.tensors["cotangent"].double())
    return {"grad_input": out.detach(), "grad_grad_output": d_g, "grad_weight": d_w, "torch_grad_input": out.detach()}


def _conv_non_finite(device, dtype):
    out = []
    # Non-finite grad_output only: with a NaN in ``weight``, whether it spreads to pixels whose taps reach only
    # the zero padding (0 * NaN) differs between the float32 gather and the float64 scatter (and PyTorch's own
    # float32 and float64 convolutions); the op does not document it.
    # Interior positions only: at a corner, inf * 0 (padding) in the weight gradient is the same question.
    for value, where in ((math.nan, (1, 0, 2, 3)), (math.inf, (1, 0, 2, 3)), (-math.inf, (0, 2, 1, 1))):
        s = _conv_make(dict(shape=(2, 2, 3, (3, 3), (1, 1), (6, 5))), device, dtype, "contiguous", seed=37)
        s.tensors["grad_output"][where] = value
        s.name = f"{value} in grad_output{list(where)}"
        out.append(s)
    return out


CONV_INPUT_GRAD = OpInfo(
    name="conv2d_input_grad",
    overloads=(torch.ops.robustkit.conv2d_input_grad,),
    # (batch, C_in, C_out, (KH, KW), (ph, pw), (H, W)): widths below, at and above the float kernel's 32-pixel
    # chunk, rectangular kernels and images, padding 0, "same" and larger than the kernel, C_in > 3.
    cases=[dict(shape=s) for s in [(3, 1, 6, (5, 5), (2, 2), (28, 28)), (2, 3, 4, (3, 3), (1, 1), (32, 32)),
                                   (2, 2, 3, (3, 5), (0, 2), (9, 33)), (1, 1, 2, (1, 1), (0, 0), (5, 70)),
                                   (2, 4, 5, (5, 3), (3, 4), (6, 7)), (1, 3, 1, (7, 7), (3, 3), (11, 12))]],
    make=_conv_make, run=_conv_run, reference=_conv_reference, naive=_conv_naive,
    # float32: each output element is a float32 sum of C_out KH KW <= 150 products of N(0, 1) values
    # (magnitude ~ sqrt(150) = 12, error ~ sqrt(150) eps32 |terms|), so 1e-5 absolute and relative.
    # float64: the same sums, ~1e-14.
    tol={F32: (1e-5, 1e-5), F64: (1e-12, 1e-12)},
    # the weight gradient (PyTorch's convolution backward, inside the op's autograd formula) sums
    # B OH OW <= 2352 products per element: sqrt(2352) eps32 |terms| ~ 6e-6 |terms|, terms up to ~10.
    output_tol={"grad_weight": {F32: (1e-4, 1e-4), F64: (1e-11, 1e-11)}},
    naive_tol=(1e-12, 1e-12),
    layouts=("contiguous", "channels_last", "transposed", "strided"),
    in_place=False, differentiable=("grad_output", "weight"),
    forward=lambda s, g, w: ops.conv2d_input_grad(g, w, **s.hyper),
    # its backward is made of PyTorch convolutions, so gradients of gradients exist (Deep Defense needs them).
    double_backward="works", double_backward_error="",
    supports_half=False, half_error="grad_output must be float32 or float64",
    opcheck_args=lambda s: [(torch.ops.robustkit.conv2d_input_grad.default,
                             (s.tensors["grad_output"].detach().requires_grad_(True),
                              s.tensors["weight"].detach().requires_grad_(True), list(s.hyper["input_size"]),
                              list(s.hyper["padding"])))],
    opcheck_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
    non_finite=_conv_non_finite,
    small_case=dict(shape=(2, 2, 3, (3, 3), (1, 1), (5, 6))), opcheck_cases=(2,),
)


OPS = [ENSEMBLE_CE, ENSEMBLE_CE_GRAD, SIGN_STEP, DEEPFOOL_STEP, CW_STEP, CONV_INPUT_GRAD]
