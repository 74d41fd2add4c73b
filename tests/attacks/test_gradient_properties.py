"""Properties of the sign-gradient attacks on a tiny random CNN: constraints, box, model untouched,
warnings and argument errors, early stop, chunking, amp, the result object."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from robustkit.attacks import DMIFGSM, FGSM, IFGSM, MIFGSM, PGD
from tests.attacks._tiny import other_class, tiny_batch, tiny_cnn
from tests.reference import gradient_attacks as ref

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_ATTACKS = [
    lambda m, eps: FGSM(m, eps=eps),
    lambda m, eps: IFGSM(m, eps=eps, steps=5),
    lambda m, eps: PGD(m, eps=eps, step_size=eps / 2, steps=5, seed=0),
    lambda m, eps: MIFGSM(m, eps=eps, steps=5, temperature=4.0),
    lambda m, eps: DMIFGSM(models=[m, tiny_cnn(seed=7)], eps=eps, steps=5),
]


@pytest.mark.parametrize("make", ALL_ATTACKS)
@pytest.mark.parametrize("eps", [0.03, 0.3])
@pytest.mark.parametrize("targeted", [False, True])
def test_linf_ball_and_box_hold(make, eps, targeted):
    m = tiny_cnn()
    x, y = tiny_batch(batch=16)
    x[:4] = x[:4].round()  # pixels at 0 and 1 exercise the box
    res = make(m, eps).run(x, y, target=other_class(y) if targeted else None)
    # Exact in the images' own dtype, as a user would check it (the step op pulls the ball's bounds in
    # where x +- eps rounds outward).
    delta = (res.adv - x).abs().flatten(1).amax(1)
    assert bool((delta <= eps).all()), delta.max().item()
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    torch.testing.assert_close(res.linf, (res.adv - x).abs().flatten(1).amax(1))
    assert res.adv.dtype == x.dtype and res.adv.shape == x.shape


@pytest.mark.parametrize("eps", [0.5, 2.0])
@pytest.mark.parametrize("random_start", [False, True])
def test_l2_ball_and_box_hold(eps, random_start):
    m = tiny_cnn()
    x, y = tiny_batch(batch=16)
    res = PGD(m, eps=eps, step_size=eps / 2, steps=6, norm="l2", random_start=random_start, seed=1).run(x, y)
    l2 = (res.adv.double() - x.double()).flatten(1).norm(dim=1)
    assert bool((l2 <= eps * (1 + 1e-6)).all()), l2.max().item()
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert l2.max() > eps / 2, "the attack should move"


def test_l2_random_start_lies_in_the_ball_and_fills_it():
    m = tiny_cnn()
    x = torch.full((200, 1, 10, 10), 0.5)
    y = torch.zeros(200, dtype=torch.int64)
    start = PGD(m, eps=1.0, step_size=0.0, steps=1, norm="l2", seed=3)(x, y)  # no move: adv is the start
    radius = (start - x).flatten(1).norm(dim=1)
    assert bool((radius <= 1.0 + 1e-6).all())
    assert radius.min() > 0.8  # uniform in a 100-dim ball: radius^100 is uniform, so the radius is near eps


def test_model_parameters_and_flags_untouched():
    m = tiny_cnn()
    m[0].weight.requires_grad_(False)  # a mix of flags must survive as it is
    before = {k: (v.detach().clone(), v.requires_grad) for k, v in m.named_parameters()}
    x, y = tiny_batch()
    for make in ALL_ATTACKS:
        make(m, 0.1).run(x, y, target=other_class(y))
    for k, v in m.named_parameters():
        assert torch.equal(v, before[k][0]) and v.requires_grad == before[k][1], k
        assert v.grad is None, f"{k} got a .grad"
    assert not m.training


def test_input_is_not_modified_and_needs_no_grad():
    m = tiny_cnn()
    x, y = tiny_batch()
    x_copy = x.clone()
    adv = MIFGSM(m, eps=0.1, steps=3)(x, y)
    assert torch.equal(x, x_copy) and not adv.requires_grad and x.grad is None


def test_model_in_train_mode_is_attacked_in_eval_mode_and_restored():
    # (the attack used to warn and run in train mode; it now switches to eval mode: tests/attacks/test_contract.py)
    m = tiny_cnn().train()
    x, y = tiny_batch()
    seen = []
    hook = m.register_forward_hook(lambda mod, inp, out: seen.append(mod.training))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PGD(m, steps=1)(x, y)
    hook.remove()
    assert seen and not any(seen) and m.training and all(sub.training for sub in m.modules())


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(steps=0), "steps must be an int >= 1"),
    (dict(steps=2.5), "steps must be an int >= 1"),
    (dict(step_size=-1.0), "step_size must be >= 0"),
    (dict(norm="l1"), "norm must be one of"),
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(hard_weight=-1.0), "hard_weight must be >= 0"),
    (dict(soft_weight=0.0), "both 0"),
    (dict(fusion="mean"), "fusion must be one of"),
    (dict(weights=[1.0]), "weights apply to fusion='logits' only"),
    (dict(eps=float("nan")), "eps must be a finite number"),
    (dict(random_start="yes"), "random_start must be a bool"),
    (dict(batch_size=0), "batch_size must be >= 1"),
])
def test_bad_hyperparameters_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PGD(tiny_cnn(), **kwargs)


def test_mifgsm_decay_and_weights_are_checked():
    with pytest.raises(ValueError, match="decay must be >= 0"):
        MIFGSM(tiny_cnn(), decay=-1.0)
    with pytest.raises(ValueError, match="one entry per model"):
        MIFGSM(models=[tiny_cnn(), tiny_cnn()], fusion="logits", weights=[1.0])


def test_bad_inputs_give_clear_errors():
    m = tiny_cnn()
    x, y = tiny_batch()
    atk = PGD(m, steps=1)
    with pytest.raises(ValueError, match=r"x must hold pixel values in \[0, 1\]"):
        atk(x * 2, y)
    with pytest.raises(ValueError, match="y must be an integer"):
        atk(x, y[:-1])
    with pytest.raises(ValueError, match="y must be an integer"):
        atk(x, y.float())
    with pytest.raises(ValueError, match="y must hold classes < 10"):
        atk(x, torch.full_like(y, 10))
    with pytest.raises(ValueError, match="y must hold classes >= 0"):
        atk(x, torch.full_like(y, -1))
    with pytest.raises(ValueError, match="target must hold classes < 10"):
        atk(x, y, target=torch.full_like(y, 12))
    with pytest.raises(ValueError, match="target equals the true label"):
        atk(x, y, target=y.clone())
    with pytest.raises(ValueError, match="must return"):
        PGD(nn.Identity().eval(), steps=1)(x, y)  # returns images, not logits


def test_models_on_different_devices_are_rejected():
    meta = tiny_cnn().to("meta")
    with pytest.raises(ValueError, match="one device"):
        MIFGSM(models=[tiny_cnn(), meta])


@pytest.mark.parametrize("make_ref, make", [
    (lambda ms, x, y, t: ref.iterative_sign(ms, x, y, eps=0.1, step_size=0.02, steps=10, target=t),
     lambda ms: IFGSM(models=ms, eps=0.1, steps=10, step_size=0.02, early_stop=True)),
    (lambda ms, x, y, t: ref.mifgsm(ms, x, y, eps=0.1, step_size=0.02, steps=10, target=t),
     lambda ms: MIFGSM(models=ms, eps=0.1, steps=10, step_size=0.02, early_stop=True)),
])
@pytest.mark.parametrize("targeted", [False, True])
def test_early_stop_keeps_the_first_successful_iterate(make_ref, make, targeted):
    models = [tiny_cnn(seed=s, dtype=torch.float64) for s in (0, 1)]
    x, y = tiny_batch(batch=24, dtype=torch.float64)
    # labels the models agree with, so untargeted success is not immediate
    y = torch.stack([m(x) for m in models]).mean(0).argmax(1)
    t = other_class(y) if targeted else None
    iterates = make_ref(models, x, y, t)
    any_hit, first_adv, first_step = ref.first_success(models, iterates, y, t)
    res = make(models).run(x, y, target=t)
    assert torch.equal(res.success, any_hit)
    assert torch.equal(res.steps, first_step)
    torch.testing.assert_close(res.adv, first_adv, atol=1e-6, rtol=0)
    assert 0 < int(any_hit.sum()) < 24 or targeted, "the case should mix finished and unfinished samples"


def test_early_stop_robust_accuracy_equals_full_run():
    m = tiny_cnn(dtype=torch.float64)
    x, y = tiny_batch(batch=32, dtype=torch.float64)
    y = m(x).argmax(1)
    full = PGD(m, eps=0.05, step_size=0.01, steps=12, seed=4).run(x, y)
    early = PGD(m, eps=0.05, step_size=0.01, steps=12, seed=4, early_stop=True).run(x, y)
    assert bool(early.success[full.success].all()), "early stop must find every success of the full run"
    assert early.success.sum() == full.success.sum()
    assert bool((early.steps[early.success] < 12).all())
    assert bool((early.steps[~early.success] == 12).all()) and bool((full.steps == 12).all())
    assert early.steps.float().mean() < 12


def test_batch_size_chunks_equal_one_batch():
    m = tiny_cnn()
    x, y = tiny_batch(batch=10)
    whole = MIFGSM(m, eps=0.1, steps=4).run(x, y, target="least_likely")
    chunked = MIFGSM(m, eps=0.1, steps=4, batch_size=3).run(x, y, target="least_likely")
    torch.testing.assert_close(chunked.adv, whole.adv, atol=1e-6, rtol=0)
    assert torch.equal(chunked.target, whole.target) and torch.equal(chunked.success, whole.success)


def test_result_fields_and_random_targets_are_reproducible():
    m = tiny_cnn()
    x, y = tiny_batch(batch=8)
    a = PGD(m, eps=0.2, step_size=0.05, steps=5, seed=11).run(x, y, target="random")
    b = PGD(m, eps=0.2, step_size=0.05, steps=5, seed=11).run(x, y, target="random")
    assert torch.equal(a.adv, b.adv) and torch.equal(a.target, b.target)
    assert bool((a.target != y).all())
    assert torch.equal(a.success, a.logits.argmax(1) == a.target)
    torch.testing.assert_close(a.l2, (a.adv - x).flatten(1).norm(dim=1))
    assert a.steps.dtype == torch.int64 and bool((a.steps == 5).all())


def test_empty_batch_and_zero_eps():
    m = tiny_cnn()
    x, y = tiny_batch(batch=4)
    empty = PGD(m, steps=2).run(x[:0], y[:0])
    assert empty.adv.shape == (0, 1, 10, 10) and empty.success.shape == (0,)
    assert torch.equal(PGD(m, eps=0.0, step_size=0.1, steps=3)(x, y), x)


def test_amp_runs_and_keeps_float32_perturbation():
    m = tiny_cnn()
    x, y = tiny_batch(batch=8)
    res = MIFGSM(m, eps=0.1, steps=3, amp=True).run(x, y)
    assert res.adv.dtype == torch.float32
    assert bool(((res.adv - x).abs() <= 0.1 + 1e-6).all()) and bool((res.adv != x).any())


@pytest.mark.cuda
@pytest.mark.parametrize("make", [
    lambda m: PGD(m, eps=0.1, step_size=0.02, steps=5, random_start=False),
    lambda m: PGD(m, eps=1.0, step_size=0.3, steps=5, norm="l2", random_start=False),
    lambda m: DMIFGSM(models=[m, m], eps=0.1, steps=5),
])
def test_cuda_matches_cpu(make):
    m = tiny_cnn(dtype=torch.float64)
    x, y = tiny_batch(batch=16, dtype=torch.float64)
    t = other_class(y)
    on_cpu = make(m).run(x, y, target=t)
    on_gpu = make(m.cuda()).run(x.cuda(), y.cuda(), target=t.cuda())
    torch.testing.assert_close(on_gpu.adv.cpu(), on_cpu.adv, atol=1e-6, rtol=0)
    assert torch.equal(on_gpu.success.cpu(), on_cpu.success)
