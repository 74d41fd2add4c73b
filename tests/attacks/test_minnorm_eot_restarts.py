"""eot= and restarts= on the minimal-norm attacks (DeepFool, C&W): equal to naive float64 loops over the draws
(tests/reference/adaptive.py) on a model whose draws are known, restarts equal to the per-sample best of
separate seeded runs and never worse than one run, a randomized model where EOT wins, and named errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustkit.attacks import CW, DeepFool
from robustkit.attacks.cw_common import margin_loss
from tests.attacks._tiny import labelled_by, tiny_cnn
from tests.reference.adaptive import naive_eot_cw_l2, naive_eot_deepfool, naive_random_start

pytestmark = pytest.mark.usefixtures("one_thread")


class CopyShifted(nn.Module):
    """A "randomized" model whose draws are known: of N = K * B input rows (the EOT copies, copy-major), copy
    k is shifted by ``shifts[k]`` before ``model``. The expectation over its K draws is exact, so an attack
    with ``eot=K`` can be compared with a loop over the K shifted models."""

    def __init__(self, model: nn.Module, shifts: torch.Tensor):
        super().__init__()
        self.model, self.shifts = model, shifts

    def forward(self, x):
        copies = self.shifts.shape[0]
        if x.shape[0] % copies:
            raise AssertionError(f"{x.shape[0]} rows are not {copies} copies of a batch")
        batch = x.shape[0] // copies
        return self.model(x + self.shifts.repeat_interleave(batch, dim=0))

    def draws(self):
        return [lambda p, k=k: self.model(p + self.shifts[k:k + 1]) for k in range(self.shifts.shape[0])]


@pytest.fixture
def shifted():
    base = tiny_cnn(seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    shifts = 0.05 * torch.randn(3, 1, 10, 10, generator=g, dtype=torch.float64)
    x = 0.2 + 0.6 * torch.rand(5, 1, 10, 10, generator=g, dtype=torch.float64)
    model = CopyShifted(base, shifts)
    with torch.no_grad():
        mean = torch.stack([d(x) for d in model.draws()]).mean(0)
    return model, x, mean.argmax(1), mean.argsort(1)[:, -3]


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("targeted", [False, True])
def test_deepfool_eot_equals_the_loop_over_draws(shifted, norm, targeted):
    model, x, y, third = shifted
    target = third if targeted else None
    res = DeepFool(model, norm=norm, candidates=5, steps=15, eot=3).run(x, y, target=target)
    for i in range(x.shape[0]):
        adv, iterations = naive_eot_deepfool(model.draws(), x[i], int(y[i]), x[i], steps=15, candidates=5,
                                             norm=norm, target=None if target is None else int(target[i]))
        # DeepFool accumulates r_total in float32 (as without EOT): equal up to its rounding
        torch.testing.assert_close(res.adv[i], adv, rtol=0, atol=1e-6)
        assert res.steps[i].item() == iterations
        assert res.success[i].item() == (iterations < 15)  # judged on the expected logits


def test_cw_eot_equals_the_loop_over_draws(shifted):
    model, x, y, _ = shifted
    kw = dict(binary_search_steps=3, steps=30, lr=0.1, initial_const=1.0)
    res = CW(model, eot=3, **kw).run(x, y)
    found = 0
    for i in range(x.shape[0]):
        adv, l2sq = naive_eot_cw_l2(model.draws(), x[i], int(y[i]), x[i], **kw)
        torch.testing.assert_close(res.adv[i], adv, rtol=0, atol=1e-9)
        found += l2sq < float("inf")
        if l2sq < float("inf"):
            torch.testing.assert_close(res.extras["best_l2"][i] ** 2, torch.tensor(l2sq, dtype=torch.float64))
    assert found >= 3


def test_margin_loss_of_draws_is_the_mean_loss_and_its_gradient_the_mean_gradient():
    g = torch.Generator().manual_seed(0)
    draws = torch.randn(4, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)  # [eot, B, C]
    label = torch.randint(0, 5, (6,), generator=g)
    for targeted in (False, True):
        f, success = margin_loss(draws, label, targeted, 0.5)
        per_draw = [margin_loss(draws[k], label, targeted, 0.5)[0] for k in range(4)]
        torch.testing.assert_close(f, torch.stack(per_draw).mean(0))
        (grad,) = torch.autograd.grad(f.sum(), draws)
        for k in range(4):
            (g_k,) = torch.autograd.grad(per_draw[k].sum(), draws, retain_graph=True)
            torch.testing.assert_close(grad[k], g_k[k] / 4)
        assert torch.equal(success, margin_loss(draws.detach().mean(0), label, targeted, 0.5)[1])


@pytest.mark.parametrize("norm", ["linf", "l0"])
def test_cw_eot_of_identical_draws_is_the_plain_attack(norm):
    model = tiny_cnn(seed=3, dtype=torch.float64)
    x = 0.2 + 0.6 * torch.rand(4, 1, 10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = labelled_by(model, x)
    kw = dict(norm=norm, binary_search_steps=2, steps=15, lr=0.1, initial_const=1.0)
    plain = CW(model, **kw).run(x, y)
    three = CW(model, eot=3, **kw).run(x, y)
    torch.testing.assert_close(three.adv, plain.adv, rtol=0, atol=1e-9)
    assert torch.equal(three.steps, plain.steps)


# ---- restarts ----------------------------------------------------------------------------------------------
def _best_of_naive_runs(run_one, x, restarts, norm, size):
    """Per sample, the smallest successful result over the runs: the first from x, then from the starts the
    restart rule draws (radius half the best so far, 0 where none) with the attack's seed."""
    g = torch.Generator().manual_seed(0)
    best = [float("inf")] * x.shape[0]
    advs = [None] * x.shape[0]
    starts = x
    for index in range(restarts):
        if index:
            radius = [0.0 if b == float("inf") else b / 2 for b in best]
            starts = naive_random_start(x, radius, norm, g)
        for i in range(x.shape[0]):
            adv, ok = run_one(i, starts[i])
            if advs[i] is None:
                advs[i] = adv
            if ok and size(adv - x[i]) < best[i]:
                best[i], advs[i] = size(adv - x[i]), adv
    return torch.stack(advs), best


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_restarts_are_the_best_of_separate_seeded_runs(norm):
    model = tiny_cnn(seed=3, dtype=torch.float64)
    x = 0.2 + 0.6 * torch.rand(6, 1, 10, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = labelled_by(model, x)
    size = (lambda d: float(d.norm())) if norm == "l2" else (lambda d: float(d.abs().max()))

    def run_one(i, start):
        adv, _ = naive_eot_deepfool([model], x[i], int(y[i]), start, steps=10, candidates=4, norm=norm)
        with torch.no_grad():
            return adv, int(model(adv.unsqueeze(0)).argmax()) != int(y[i])  # the last iterate may succeed too

    one = DeepFool(model, norm=norm, candidates=4, steps=10, seed=0).run(x, y)
    res = DeepFool(model, norm=norm, candidates=4, steps=10, restarts=3, seed=0).run(x, y)
    expected, best = _best_of_naive_runs(run_one, x, 3, norm, size)
    torch.testing.assert_close(res.adv, expected, rtol=0, atol=1e-6)
    sizes = res.l2 if norm == "l2" else res.linf
    one_sizes = one.l2 if norm == "l2" else one.linf
    assert bool((res.success | ~one.success).all())
    assert bool((sizes[one.success] <= one_sizes[one.success] + 1e-12).all())  # never worse than one run
    best = torch.tensor(best, dtype=torch.float64)
    assert torch.equal(best.isfinite(), res.success)
    torch.testing.assert_close(sizes[res.success], best[res.success], rtol=0, atol=1e-6)


def test_cw_restarts_are_the_best_of_separate_seeded_runs():
    model = tiny_cnn(seed=3, dtype=torch.float64)
    x = 0.2 + 0.6 * torch.rand(5, 1, 10, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = labelled_by(model, x)
    kw = dict(binary_search_steps=2, steps=15, lr=0.1, initial_const=1.0)

    def run_one(i, start):
        adv, l2sq = naive_eot_cw_l2([model], x[i], int(y[i]), start, **kw)
        return adv, l2sq < float("inf")

    one = CW(model, seed=0, **kw).run(x, y)
    res = CW(model, restarts=3, seed=0, **kw).run(x, y)
    expected, best = _best_of_naive_runs(run_one, x, 3, "l2", lambda d: float(d.norm()))
    torch.testing.assert_close(res.adv, expected, rtol=0, atol=1e-9)
    found = res.extras["best_l2"].isfinite()
    assert bool((found | ~one.extras["best_l2"].isfinite()).all())
    assert bool((res.extras["best_l2"] <= one.extras["best_l2"] + 1e-12).all())
    assert bool((res.extras["best_l2"] < one.extras["best_l2"] - 1e-6).any())  # a restart won somewhere
    torch.testing.assert_close(res.extras["best_l2"], torch.tensor(best, dtype=torch.float64)
                               .where(found, torch.tensor(float("inf"), dtype=torch.float64)))


@pytest.mark.parametrize("norm", ["linf", "l0"])
def test_cw_linf_and_l0_restarts_never_worse_than_one_run(norm):
    model = tiny_cnn(seed=3)
    x = 0.2 + 0.6 * torch.rand(6, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    y = labelled_by(model, x)
    kw = dict(norm=norm, binary_search_steps=2, steps=15, lr=0.1, initial_const=1.0, seed=0)
    key = f"best_{norm}"
    one = CW(model, **kw).run(x, y)
    many = CW(model, restarts=3, restart_radius=0.5, **kw).run(x, y)
    assert bool((many.extras[key] <= one.extras[key]).all())


# ---- a randomized model -------------------------------------------------------------------------------------
class InputDropout(nn.Module):
    """Dropout on the input pixels, also in eval mode (a randomized defense, one mask per row and call)."""

    def __init__(self, model: nn.Module, p: float):
        super().__init__()
        self.model, self.p = model, p

    def forward(self, x):
        return self.model(F.dropout(x, self.p, training=True))


def _expected_success(model, adv, y, draws=64):
    with torch.no_grad():
        mean = torch.stack([model(adv) for _ in range(draws)]).mean(0)
    return mean.argmax(1) != y


@pytest.mark.slow
def test_eot_beats_one_forward_on_a_randomized_model(mnist_lenet):
    base, x, y = mnist_lenet
    defended = InputDropout(base, 0.3).eval()
    x, y = x[:48], y[:48]
    with torch.no_grad():
        keep = _expected_success(defended, x, y).logical_not()  # classified correctly in expectation
    x, y = x[keep], y[keep]
    rows = []
    for attack in (lambda eot: DeepFool(defended, steps=50, eot=eot),
                   lambda eot: CW(defended, binary_search_steps=4, steps=50, lr=0.1, initial_const=1.0,
                                  eot=eot)):
        torch.manual_seed(0)
        one = attack(1)(x, y)
        torch.manual_seed(0)
        many = attack(16)(x, y)
        torch.manual_seed(1)
        ok_one, ok_many = _expected_success(defended, one, y), _expected_success(defended, many, y)
        rows.append((float(ok_one.float().mean()), float(ok_many.float().mean())))
    print("expected success, eot=1 vs eot=16 (DeepFool, C&W):", rows)
    for ok_one, ok_many in rows:
        assert ok_many >= ok_one + 0.15, rows


@pytest.mark.parametrize("cls", [DeepFool, CW])
@pytest.mark.parametrize("kwargs, message", [
    (dict(eot=0), "eot must be an int >= 1"),
    (dict(eot=1.5), "eot must be an int >= 1"),
    (dict(restarts=0), "restarts must be an int >= 1"),
    (dict(restart_radius=-1.0), "restart_radius must be None or a finite number > 0"),
    (dict(restart_radius=float("nan")), "restart_radius must be None or a finite number > 0"),
])
def test_bad_eot_and_restarts_are_named(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(tiny_cnn(), **kwargs)


def test_bad_eot_batched_and_l0_restarts_without_radius_are_named():
    with pytest.raises(TypeError, match="eot_batched must be a bool"):
        DeepFool(tiny_cnn(), eot_batched="yes")
    with pytest.raises(ValueError, match="restarts > 1 with norm='l0' needs restart_radius"):
        CW(tiny_cnn(), norm="l0", restarts=2)


def test_unbatched_eot_gives_the_batched_attack_on_a_deterministic_model():
    model = tiny_cnn(seed=3)
    x = torch.rand(4, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    y = labelled_by(model, x)
    batched = DeepFool(model, eot=3).run(x, y)
    looped = DeepFool(model, eot=3, eot_batched=False).run(x, y)
    plain = DeepFool(model).run(x, y)
    torch.testing.assert_close(looped.adv, batched.adv)
    torch.testing.assert_close(batched.adv, plain.adv, rtol=0, atol=1e-5)
