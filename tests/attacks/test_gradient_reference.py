"""Each sign-gradient attack against the naive implementation of tests/reference/gradient_attacks.py.

float64 models and inputs, so the fused ops and the reference agree to rounding (1e-6 is far above it);
float32 runs agree too except where a gradient element is within rounding of 0 (checked separately)."""
from __future__ import annotations

import pytest
import torch

from robustkit.attacks import BIM, DMIFGSM, FGSM, IFGSM, MIFGSM, PGD
from tests.attacks._tiny import other_class, tiny_batch, tiny_cnn
from tests.reference import gradient_attacks as ref

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
TOL = 1e-6


def _models(k=1, dtype=F64):
    return [tiny_cnn(seed=s, dtype=dtype) for s in range(k)]


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 8.0])
def test_fgsm_matches_reference(targeted, temperature):
    (m,), (x, y) = _models(), tiny_batch(dtype=F64)
    t = other_class(y) if targeted else None
    adv = FGSM(m, eps=0.1, temperature=temperature)(x, y, target=t)
    expected = ref.iterative_sign([m], x, y, eps=0.1, step_size=0.1, steps=1, target=t, temperature=temperature)
    torch.testing.assert_close(adv, expected[-1], atol=TOL, rtol=0)


@pytest.mark.parametrize("targeted", [False, True])
def test_ifgsm_matches_reference(targeted):
    (m,), (x, y) = _models(), tiny_batch(dtype=F64)
    t = other_class(y) if targeted else None
    res = IFGSM(m, eps=0.1, steps=7).run(x, y, target=t)
    expected = ref.iterative_sign([m], x, y, eps=0.1, step_size=0.1 / 7, steps=7, target=t)
    torch.testing.assert_close(res.adv, expected[-1], atol=TOL, rtol=0)
    assert BIM is IFGSM and bool((res.steps == 7).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_matches_reference(norm, targeted):
    (m,), (x, y) = _models(), tiny_batch(dtype=F64)
    t = other_class(y) if targeted else None
    eps, step = (0.1, 0.03) if norm == "linf" else (1.0, 0.3)
    adv = PGD(m, eps=eps, step_size=step, steps=6, norm=norm, random_start=False)(x, y, target=t)
    naive = ref.iterative_sign if norm == "linf" else ref.pgd_l2
    expected = naive([m], x, y, eps=eps, step_size=step, steps=6, target=t)
    torch.testing.assert_close(adv, expected[-1], atol=TOL, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_random_start_is_seeded_and_matches_reference_from_that_start(norm):
    (m,), (x, y) = _models(), tiny_batch(dtype=F64)
    eps, step = (0.1, 0.03) if norm == "linf" else (1.0, 0.3)
    one_step = PGD(m, eps=eps, step_size=0.0, steps=1, norm=norm, seed=5)(x, y)  # step 0: the start itself
    again = PGD(m, eps=eps, step_size=0.0, steps=1, norm=norm, seed=5)(x, y)
    torch.testing.assert_close(one_step, again, atol=0, rtol=0)
    assert not torch.equal(one_step, x), "the random start must move away from x"
    adv = PGD(m, eps=eps, step_size=step, steps=4, norm=norm, seed=5)(x, y)
    naive = ref.iterative_sign if norm == "linf" else ref.pgd_l2
    expected = naive([m], x, y, eps=eps, step_size=step, steps=4, start=one_step)
    torch.testing.assert_close(adv, expected[-1], atol=TOL, rtol=0)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_mifgsm_matches_reference(targeted, decay):
    (m,), (x, y) = _models(), tiny_batch(dtype=F64)
    t = other_class(y) if targeted else None
    adv = MIFGSM(m, eps=0.1, steps=8, step_size=0.02, decay=decay)(x, y, target=t)
    expected = ref.mifgsm([m], x, y, eps=0.1, step_size=0.02, steps=8, decay=decay, target=t)
    torch.testing.assert_close(adv, expected[-1], atol=TOL, rtol=0)


@pytest.mark.parametrize("fusion", ["loss", "logits"])
def test_ensemble_mifgsm_matches_reference(fusion):
    models, (x, y) = _models(3), tiny_batch(dtype=F64)
    t = other_class(y)
    weights = [0.5, 0.2, 0.3] if fusion == "logits" else None
    kwargs = dict(temperature=4.0, soft_weight=0.7, hard_weight=0.4, fusion=fusion, weights=weights)
    adv = MIFGSM(models=models, eps=0.1, steps=5, **kwargs)(x, y, target=t)
    expected = ref.mifgsm(models, x, y, eps=0.1, step_size=0.02, steps=5, target=t, **kwargs)
    torch.testing.assert_close(adv, expected[-1], atol=TOL, rtol=0)


def test_dmifgsm_is_algorithm_1():
    models, (x, y) = _models(2), tiny_batch(dtype=F64)
    t = other_class(y)
    atk = DMIFGSM(models=models)
    assert (atk.temperature, atk.soft_weight, atk.hard_weight, atk.steps) == (16.0, 1.0, 1.0, 20)
    assert atk.step_size == pytest.approx(32 / 255 / 20)
    adv = atk(x, y, target=t)
    expected = ref.mifgsm(models, x, y, eps=32 / 255, step_size=32 / 255 / 20, steps=20, target=t,
                          temperature=16.0, soft_weight=1.0, hard_weight=1.0)
    torch.testing.assert_close(adv, expected[-1], atol=TOL, rtol=0)


def test_dmifgsm_at_t1_without_hard_term_is_targeted_mifgsm():
    (m,), (x, y) = _models(), tiny_batch(dtype=F64)
    t = other_class(y)
    eps, steps = 0.2, 10
    distilled = DMIFGSM(m, temperature=1.0, hard_weight=0.0, eps=eps, steps=steps)(x, y, target=t)
    plain = MIFGSM(m, eps=eps, steps=steps, step_size=eps / steps)(x, y, target=t)
    torch.testing.assert_close(distilled, plain, atol=TOL, rtol=0)


@pytest.mark.parametrize("fusion", ["loss", "logits"])
def test_ensemble_of_copies_equals_the_single_model(fusion):
    (m,), (x, y) = _models(), tiny_batch(dtype=F64)
    single = MIFGSM(m, eps=0.1, steps=6, temperature=2.0, hard_weight=1.0)(x, y)
    copies = MIFGSM(models=[m, m, m], eps=0.1, steps=6, temperature=2.0, hard_weight=1.0, fusion=fusion)(x, y)
    torch.testing.assert_close(copies, single, atol=TOL, rtol=0)


def test_float32_agrees_with_reference_up_to_sign_ties():
    (m,), (x, y) = _models(dtype=torch.float32), tiny_batch(batch=16)
    adv = PGD(m, eps=0.1, step_size=0.02, steps=5, random_start=False)(x, y)
    expected = ref.iterative_sign([m], x, y, eps=0.1, step_size=0.02, steps=5)[-1]
    close = (adv - expected).abs() <= TOL
    # a sign can differ only where a float32 gradient element is within rounding of zero
    assert close.float().mean() > 0.999, f"{(~close).sum().item()} of {close.numel()} elements differ"
