"""robustkit.ops.cw_l2_step beyond the op-test harness (test_opinfo.py: spec, naive, layouts, empty batch, opcheck):
the box under extreme steps, a compiled C&W step with its margin loss, [B] inputs, Adam's details, errors."""
import re

import pytest
import torch

from robustkit.ops import cw_l2_step
from robustkit.ops import reference

TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
STATE = ("w", "x", "exp_avg", "exp_avg_sq", "best_adv", "best_l2sq")


def _state(shape, dtype, device, seed, clip=(0.0, 1.0)):
    g = torch.Generator().manual_seed(seed)
    lo, hi = clip
    batch = shape[0]

    def rnd(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    w = rnd(*shape)
    s = {
        "w": w, "x": lo + (hi - lo) * (torch.tanh(w) + 1) / 2,
        "exp_avg": 0.1 * rnd(*shape), "exp_avg_sq": 0.1 * rnd(*shape).abs(),
        "best_adv": torch.rand(*shape, generator=g, dtype=torch.float64),
        "best_l2sq": torch.rand(batch, generator=g, dtype=torch.float64) * shape[1] / 3,
        "x_orig": lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64),
        "loss_grad": rnd(*shape), "success": torch.rand(batch, generator=g) < 0.6,
    }
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in s.items()}


def _run_op(s, **kw):
    return cw_l2_step(s["w"], s["x"], s["exp_avg"], s["exp_avg_sq"], s["best_adv"], s["best_l2sq"], s["x_orig"],
                      s["loss_grad"], s["success"], **kw)


def _run_ref(s, **kw):
    return reference.cw_l2_step(s["w"].cpu(), s["x_orig"].cpu(), s["loss_grad"].cpu(), s["success"].cpu(),
                                s["exp_avg"].cpu(), s["exp_avg_sq"].cpu(), s["best_adv"].cpu(), s["best_l2sq"].cpu(),
                                **kw)


def test_iterates_stay_in_the_box_for_extreme_steps():
    s = _state((4, 50), torch.float32, "cpu", seed=3)
    s["loss_grad"].mul_(1e6)
    for step in range(1, 30):
        _run_op(s, step=step, lr=5.0)
        assert (s["x"] >= 0).all() and (s["x"] <= 1).all() and torch.isfinite(s["w"]).all()


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(x=s["x"].t().contiguous().t()), "x must be contiguous"),
    (lambda s: s.update(exp_avg=s["exp_avg"][:, :5]), "exp_avg must have w's shape"),
    (lambda s: s.update(best_l2sq=s["best_l2sq"][:2]), "best_l2sq must be a [B] tensor with B = 4"),
    (lambda s: s.update(success=s["success"].float()), "success must be bool"),
    (lambda s: s.update(loss_grad=s["loss_grad"].double()), "loss_grad must be float32"),
])
def test_bad_input_errors(change, message):
    s = _state((4, 10), torch.float32, "cpu", seed=6)
    s["x"] = s["x"].contiguous()
    change(s)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        _run_op(s, step=1)


@pytest.mark.parametrize("kw, message", [(dict(step=0), "step must be >= 1"), (dict(step=1, lr=-1.0), "lr must be"),
                                         (dict(step=1, clip=(1.0, 0.0)), "clip must be a finite (min, max)"),
                                         (dict(step=1, betas=(1.0, 0.9)), "beta1 must be in [0, 1)")])
def test_bad_hyperparameter_errors(kw, message):
    s = _state((2, 3), torch.float32, "cpu", seed=7)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        _run_op(s, **kw)


def test_compiles_fullgraph_and_matches_eager():
    """The fake kernel and the op's mutation annotations let torch.compile trace a C&W step (margin-loss
    gradient, then the in-place fused step) in one graph, with the same state as in eager mode."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(36, 4, generator=gen, dtype=torch.float64)

    def attack_step(s, label, step):
        x_req = s["x"].detach().requires_grad_(True)
        logits = x_req.flatten(1) @ weight
        real = logits.gather(1, label.unsqueeze(1)).squeeze(1)
        other = logits.scatter(1, label.unsqueeze(1), float("-inf")).amax(dim=1)
        (loss_grad,) = torch.autograd.grad((0.5 * (real - other).clamp_min(0)).sum(), x_req)
        s = dict(s, loss_grad=loss_grad.view_as(s["x"]), success=other > real)
        return _run_op(s, step=step, lr=0.05)

    label = torch.tensor([0, 1, 2, 3, 1])
    eager, comp = _state((5, 1, 6, 6), torch.float64, "cpu", seed=4), _state((5, 1, 6, 6), torch.float64, "cpu", seed=4)
    compiled = torch.compile(attack_step, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(trace_autograd_ops=True):  # torch.autograd.grad inside the graph
        for step in (1, 2, 3):
            l2_eager, l2_comp = attack_step(eager, label, step), compiled(comp, label, step)
            torch.testing.assert_close(l2_comp, l2_eager, rtol=0, atol=0)
    for name in STATE:
        torch.testing.assert_close(comp[name], eager[name], rtol=0, atol=0)
    assert not torch.equal(comp["w"], _state((5, 1, 6, 6), torch.float64, "cpu", seed=4)["w"])  # it moved


# Regression tests from the reliability review: [B]-shaped inputs, the adam_eps name, consistent float32
# betas, in-place buffers that share memory.

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_of_scalars_matches_reference(dtype):
    """[B] inputs (no feature dims): the reference used to reduce over every dim (l2sq 0-D) and got best_adv
    wrong; both now give per-sample [B] results, and they agree."""
    s = {k: v.reshape(5).contiguous() for k, v in _state((5, 1), dtype, "cpu", seed=3).items()}
    s["success"][:] = True
    s["best_l2sq"][:] = float("inf")
    ref = _run_ref(s, step=1)
    assert ref["l2sq"].shape == (5,)
    torch.testing.assert_close(ref["l2sq"], (s["x"].double() - s["x_orig"].double()) ** 2)
    l2sq = _run_op(s, step=1)
    torch.testing.assert_close(l2sq.double(), ref["l2sq"], **TOL[dtype])
    for name in STATE:
        torch.testing.assert_close(s[name].double(), ref[name], **TOL[dtype], msg=name)


def test_adams_epsilon_is_named_adam_eps():
    s = _state((2, 6), torch.float64, "cpu", seed=4)
    ref = _run_ref(s, step=3, adam_eps=0.5)
    _run_op(s, step=3, adam_eps=0.5)
    torch.testing.assert_close(s["w"], ref["w"], **TOL[torch.float64])
    with pytest.raises(TypeError, match="eps"):
        _run_op(s, step=3, eps=1e-8)
    with pytest.raises(RuntimeError, match="adam_eps must be a finite number > 0, got 0"):
        _run_op(s, step=3, adam_eps=0.0)


def test_float32_adam_coefficients_are_consistent():
    """Step 1 from zero moments is lr * g / (|g| + adam_eps) when the moment updates and the bias corrections use
    the same betas. Taking 1 - float32(beta2) for the moment but the float64 beta2 for the correction was off
    by 8e-5 relative at beta2 = 0.9999."""
    lr, shape = 1.0, (3, 40)
    s = _state(shape, torch.float32, "cpu", seed=5)
    s["exp_avg"].zero_()
    s["exp_avg_sq"].zero_()
    s["x_orig"].copy_(s["x"])  # so g = loss_grad * dx/dw
    s["loss_grad"].mul_(100.0)
    w0, x0 = s["w"].double().clone(), s["x"].double()
    g = s["loss_grad"].double() * 2 * x0 * (1 - x0)
    _run_op(s, step=1, lr=lr, betas=(0.9, 0.9999))
    expected = w0 - lr * g / (g.abs() + 1e-8)
    torch.testing.assert_close(s["w"].double(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("alias, message", [
    (("exp_avg_sq", "exp_avg"), "exp_avg and exp_avg_sq must not share memory"),
    (("best_adv", "x"), "x and best_adv must not share memory"),
    (("x_orig", "x"), "x and x_orig must not share memory"),
    (("loss_grad", "w"), "w and loss_grad must not share memory"),
])
def test_in_place_buffers_must_not_share_memory(alias, message):
    """One tensor as two buffers made the state garbage (the kernels treat them as distinct, __restrict__)."""
    s = _state((2, 6), torch.float32, "cpu", seed=6)
    target, source = alias
    s[target] = s[source]
    with pytest.raises(RuntimeError, match=re.escape(message)):
        _run_op(s, step=1)
