"""APGD: the DLR losses in float64, the checkpoint schedule and the whole iteration against the naive
Algorithm 1 of tests/reference/adaptive.py, the constraints, APGD-T, and strength on the trained LeNet."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.attacks._apgd_core import apgd, checkpoints, random_start
from robustkit.attacks.apgd import APGD, APGDT
from robustkit.attacks.dlr import attack_loss_and_grad, dlr_loss_and_grad, targeted_dlr_loss_and_grad
from tests.attacks._tiny import labelled_by, tiny_batch, tiny_cnn
from tests.reference.adaptive import naive_apgd, naive_checkpoints, naive_dlr

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- losses -----------------------------------------------------------------------------------------------
def _autograd_dlr(z, y, target=None):
    ordered = z.sort(dim=1, descending=True).values
    own = z.gather(1, y.unsqueeze(1)).squeeze(1)
    if target is None:
        other = z.scatter(1, y.unsqueeze(1), float("-inf")).amax(dim=1)
        return -(own - other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    zt = z.gather(1, target.unsqueeze(1)).squeeze(1)
    return -(own - zt) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("targeted", [False, True])
def test_dlr_value_and_gradient_match_float64_autograd_and_naive(seed, targeted):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(16, 10, generator=g, dtype=torch.float64) * 3)
    y = torch.randint(0, 10, (16,), generator=g)
    y[:4] = z[:4].argmax(1)  # the label on top for some rows (the runner-up branch)
    t = (y + torch.randint(1, 10, (16,), generator=g)) % 10
    zv = z.clone().requires_grad_(True)
    ref = _autograd_dlr(zv, y, t if targeted else None)
    (ref_grad,) = torch.autograd.grad(ref.sum(), zv)
    value, grad = targeted_dlr_loss_and_grad(z, y, t) if targeted else dlr_loss_and_grad(z, y)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    naive = [naive_dlr(z[i].tolist(), int(y[i]), int(t[i]) if targeted else None) for i in range(16)]
    torch.testing.assert_close(value, torch.tensor(naive, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_dlr_gradcheck():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4])

    class Closed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits):
            value, grad = dlr_loss_and_grad(logits, y)
            ctx.save_for_backward(grad)
            return value

        @staticmethod
        def backward(ctx, upstream):
            (grad,) = ctx.saved_tensors
            return grad * upstream.unsqueeze(1)

    assert torch.autograd.gradcheck(Closed.apply, (z,))


def test_ce_gradient_is_softmax_minus_onehot_in_float64():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (8,), generator=g)
    ref = nn.functional.cross_entropy(z, y, reduction="none")
    (ref_grad,) = torch.autograd.grad(ref.sum(), z)
    value, grad = attack_loss_and_grad("ce", z.detach(), y, None)
    torch.testing.assert_close(value, ref.detach())
    torch.testing.assert_close(grad, ref_grad)
    value_t, grad_t = attack_loss_and_grad("ce", z.detach(), y, (y + 1) % 10)
    torch.testing.assert_close(value_t, -nn.functional.cross_entropy(z.detach(), (y + 1) % 10, reduction="none"))


# ---- the schedule -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 20, 37, 100, 250, 1000])
def test_checkpoints_equal_the_papers_formula(steps):
    assert checkpoints(steps) == naive_checkpoints(steps)


def test_checkpoints_for_100_steps():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_iteration_equals_naive_algorithm_1(loss, norm, eps):
    """Step sizes per iteration, f_max and x_max of the batched APGD equal the per-sample naive Algorithm 1
    (float64, early stop off so that every sample runs every step)."""
    model = tiny_cnn(seed=2, dtype=torch.float64)
    x, y = tiny_batch(batch=6, dtype=torch.float64, seed=5)
    start = random_start(x, eps, norm, torch.Generator().manual_seed(0))
    steps = 30
    run = apgd(model, x, y, start, eps=eps, norm=norm, steps=steps, loss=loss, early_stop=False, trace=True)
    for i in range(x.shape[0]):
        def objective(p, i=i):
            z = model(p)
            if loss == "ce":
                return nn.functional.cross_entropy(z, y[i:i + 1], reduction="sum")
            return _autograd_dlr(z, y[i:i + 1]).sum()

        etas, x_max, f_max = naive_apgd(objective, x[i:i + 1], start[i:i + 1], eps, norm, steps)
        torch.testing.assert_close(run.step_trace[:, i], torch.tensor(etas, dtype=torch.float64), rtol=0, atol=0)
        torch.testing.assert_close(run.best_loss[i], torch.tensor(f_max, dtype=torch.float64), rtol=1e-9, atol=1e-12)
        if not run.success[i]:
            torch.testing.assert_close(run.adv[i:i + 1], x_max, rtol=1e-9, atol=1e-12)
    # the schedule did something: at least one halving happened somewhere
    assert bool((run.step_trace[-1] < run.step_trace[0]).any())


def test_early_stop_gives_the_same_result():
    model = tiny_cnn(seed=0)
    x, y = tiny_batch(batch=12, seed=2)
    start = random_start(x, 0.05, "linf", torch.Generator().manual_seed(1))
    a = apgd(model, x, y, start, eps=0.05, steps=25, early_stop=True)
    b = apgd(model, x, y, start, eps=0.05, steps=25, early_stop=False)
    assert torch.equal(a.success, b.success)
    torch.testing.assert_close(a.adv, b.adv)
    assert torch.equal(a.steps, b.steps)


def test_grouped_targets_leave_together_and_equal_separate_runs():
    # APGD-T's targets as one batch: two rows per sample, one per target; each row follows its own separate
    # run until a row of its sample succeeds, then both leave
    model = tiny_cnn(seed=0)
    x, y = tiny_batch(batch=12, seed=2)
    with torch.no_grad():
        y = model(x).argmax(1)
        order = model(x).argsort(1, descending=True)
    t1, t2 = order[:, 1], order[:, 2]
    g = torch.Generator().manual_seed(1)
    s1, s2 = random_start(x, 0.04, "linf", g), random_start(x, 0.04, "linf", g)
    kw = dict(eps=0.04, steps=25, loss="dlr")
    a, b = apgd(model, x, y, s1, target=t1, **kw), apgd(model, x, y, s2, target=t2, **kw)
    both = apgd(model, x.repeat(2, 1, 1, 1), y.repeat(2), torch.cat([s1, s2]), target=torch.cat([t1, t2]),
                groups=torch.arange(12).repeat(2), **kw)
    n = x.shape[0]
    assert torch.equal(both.success[:n] | both.success[n:], a.success | b.success)
    assert (a.success & b.success).any() and (a.success ^ b.success).any(), "needs both kinds of sample"
    for part, alone, other in ((slice(0, n), a, b), (slice(n, 2 * n), b, a)):
        # this row succeeds no later than the other (x(0) and x(1) are judged before any row can leave)
        first = alone.success & (~other.success | (alone.steps <= other.steps.clamp(min=1)))
        assert torch.equal(both.success[part], first)
        torch.testing.assert_close(both.adv[part][first], alone.adv[first])
        assert torch.equal(both.steps[part][first], alone.steps[first])
        later = other.success & ~first  # the other row succeeded first: this one left at that step
        assert torch.equal(both.steps[part][later], other.steps[later])


# ---- the attack -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_constraints_hold_and_parameters_untouched(norm, eps):
    model = tiny_cnn(seed=0)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = tiny_batch(batch=10, seed=3)
    res = APGD(model, eps=eps, norm=norm, steps=20, restarts=2).run(x, y)
    size = res.linf if norm == "linf" else res.l2
    assert bool((size <= eps + 1e-6).all())
    assert float(res.adv.min()) >= 0 and float(res.adv.max()) <= 1
    assert model.training, "the model's mode is restored"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_targeted_reaches_the_target_and_apgdt_counts_misclassification():
    model = tiny_cnn(seed=1)
    x, y = tiny_batch(batch=10, seed=4)
    y = labelled_by(model, x)
    t = (y + 1) % 10
    res = APGD(model, eps=0.3, steps=30, loss="dlr").run(x, y, target=t)
    assert bool((res.logits.argmax(1)[res.success] == t[res.success]).all())
    assert res.success.float().mean() > 0.5
    res_t = APGDT(model, eps=0.05, steps=20, target=3).run(x, y)
    assert bool((res_t.logits.argmax(1)[res_t.success] != y[res_t.success]).all())


@pytest.mark.parametrize("kwargs,message", [
    ({"eot": 0}, "eot must be an int >= 1"),
    ({"restarts": 0}, "restarts must be an int >= 1"),
    ({"loss": "hinge"}, "loss must be one of"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"rho": 1.5}, "rho must be a number in"),
    ({"target": 0}, "target must be None"),
])
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        APGD(tiny_cnn(), eps=0.1, **kwargs)


def test_dlr_needs_three_classes():
    model = tiny_cnn(num_classes=2)
    x, y = tiny_batch(batch=4, num_classes=2)
    with pytest.raises(ValueError, match="loss='dlr'.*at least 3 classes"):
        APGD(model, eps=0.1, loss="dlr").run(x, y)
    model3 = tiny_cnn(num_classes=3)
    x3, y3 = tiny_batch(batch=4, num_classes=3)
    with pytest.raises(ValueError, match="targeted DLR.*at least 4 classes"):
        APGDT(model3, eps=0.1).run(x3, y3)


@pytest.mark.slow
def test_apgd_ce_at_most_pgd40_robust_accuracy_on_trained_lenet(mnist_lenet):
    from robustkit.attacks import PGD

    model, x, y = mnist_lenet
    x, y = x[:128], y[:128]
    for eps in (0.3, 0.1):
        apgd_acc = 1 - APGD(model, eps=eps, steps=100).run(x, y).success.float().mean()
        pgd_acc = 1 - PGD(model, eps=eps, step_size=0.01, steps=40, seed=0).run(x, y).success.float().mean()
        assert apgd_acc <= pgd_acc, (eps, float(apgd_acc), float(pgd_acc))
    assert apgd_acc > 0  # eps = 0.1 leaves some robust samples: the comparison is not 0 <= 0
