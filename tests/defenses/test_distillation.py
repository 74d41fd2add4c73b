"""Defensive distillation: the teacher's and the student's losses against naive float64 versions of Papernot et
al.'s formulas, the deployed student at T = 1, argument errors, and a short real-MNIST run (slow)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.defenses import AtTemperature, Distillation, TemperatureCrossEntropy, defensive_distillation
from robustkit.defenses.distillation import soft_cross_entropy
from tests.reference.defenses import naive_soft_cross_entropy, naive_temperature_ce


def tiny_model(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, classes)).double()


def batch(m=6, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, 1, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 5, (m,), generator=g)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 7.0, 100.0])
def test_soft_cross_entropy_and_gradient_equal_naive(temperature, one_thread):
    g = torch.Generator().manual_seed(int(temperature * 10))
    student = (torch.randn(5, 6, generator=g, dtype=torch.float64) * 30).requires_grad_(True)
    teacher = torch.randn(5, 6, generator=g, dtype=torch.float64) * 30
    probs = torch.softmax(teacher / temperature, dim=1)
    got = soft_cross_entropy(student, probs, temperature)
    want = naive_soft_cross_entropy(student, teacher, temperature)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (g_got,) = torch.autograd.grad(got, student)
    (g_want,) = torch.autograd.grad(want, student)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("temperature", [1.0, 20.0, 100.0])
def test_teacher_objective_equals_naive_temperature_ce(temperature, one_thread):
    x, y = batch()
    model = tiny_model()
    out = TemperatureCrossEntropy(temperature)(model, x, y)
    want = naive_temperature_ce(model(x), y, temperature)
    torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
    got_g = torch.autograd.grad(out.loss, list(model.parameters()))
    want_g = torch.autograd.grad(want, list(model.parameters()))
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("temperature", [2.0, 50.0])
def test_distillation_objective_equals_naive_and_leaves_the_teacher_alone(temperature, one_thread):
    x, y = batch()
    teacher, student = tiny_model(seed=1), tiny_model(seed=2)
    teacher.train()
    before = [p.detach().clone() for p in teacher.parameters()]
    out = Distillation(teacher, temperature=temperature)(student, x, y)
    want = naive_soft_cross_entropy(student(x), teacher(x).detach(), temperature)
    torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
    got_g = torch.autograd.grad(out.loss, list(student.parameters()))
    want_g = torch.autograd.grad(want, list(student.parameters()))
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    assert teacher.training                                  # its mode is restored after labelling
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    torch.testing.assert_close(out.logits, student(x))


def test_hard_weight_adds_the_cross_entropy_at_t(one_thread):
    x, y = batch()
    teacher, student = tiny_model(seed=1), tiny_model(seed=2)
    soft = Distillation(teacher, temperature=4.0)(student, x, y).loss
    both = Distillation(teacher, temperature=4.0, hard_weight=0.3)(student, x, y).loss
    torch.testing.assert_close(both, soft + 0.3 * naive_temperature_ce(student(x), y, 4.0), rtol=1e-12, atol=1e-12)


def test_student_at_t1_predicts_as_at_t_with_scaled_logits(one_thread):
    x, _ = batch(20)
    student = tiny_model()
    for temperature in (1.0, 10.0, 100.0):
        at_t = AtTemperature(student, temperature)
        with torch.no_grad():
            deployed, trained = student(x), at_t(x)
        assert torch.equal(deployed.argmax(1), trained.argmax(1))
        torch.testing.assert_close(deployed, temperature * trained, rtol=1e-13, atol=0)


def test_teacher_with_another_class_count_is_refused():
    x, y = batch()
    with pytest.raises(ValueError, match="Distillation: teacher gives 7 classes but the student gives 5"):
        Distillation(tiny_model(classes=7), temperature=3.0)(tiny_model(), x, y)


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf"), float("nan"), True])
def test_bad_temperature_names_the_argument(temperature):
    teacher = tiny_model()
    with pytest.raises(ValueError, match="Distillation: temperature must be a finite number > 0"):
        Distillation(teacher, temperature=temperature)
    with pytest.raises(ValueError, match="TemperatureCrossEntropy: temperature must be a finite number > 0"):
        TemperatureCrossEntropy(temperature)
    with pytest.raises(ValueError, match="AtTemperature: temperature must be a finite number > 0"):
        AtTemperature(teacher, temperature)
    with pytest.raises(ValueError, match="defensive_distillation: temperature must be a finite number > 0"):
        defensive_distillation(tiny_model, (torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.int64)),
                               temperature, 1)


def test_other_bad_arguments():
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        Distillation("teacher", temperature=2.0)
    with pytest.raises(ValueError, match="hard_weight must be a finite number >= 0"):
        Distillation(tiny_model(), temperature=2.0, hard_weight=-1)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        defensive_distillation(tiny_model, None, 2.0, 0)
    with pytest.raises(TypeError, match="make_model must be a callable"):
        defensive_distillation(tiny_model(), None, 2.0, 1)
    with pytest.raises(ValueError, match="soft_targets must have the logits' shape"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))


def test_defensive_distillation_runs_the_whole_procedure_on_fit(one_thread):
    """Teacher at T, soft labels, student at T; the student comes back in eval mode, and a ``checkpoint_dir``
    gets one folder per stage."""
    pytest.importorskip("robustkit.training.fit")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, :5].argmax(1)).to(torch.int64)
    student, teacher = defensive_distillation(lambda: tiny_model().float(), (x, y), 5.0, 2, batch_size=32,
                                              optimizer="adam", lr=1e-2, progress=False, return_teacher=True)
    assert not student.training and not teacher.training
    assert student is not teacher
    with torch.no_grad():
        agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean()
    assert agree > 0.5


@pytest.mark.slow
def test_on_mnist_distillation_at_t100_masks_the_input_gradient(shared_data):
    """Papernot et al.'s mechanism: a student distilled at T = 100 and deployed at T = 1 has a cross-entropy
    input gradient orders of magnitude smaller than an undistilled network's."""
    from robustkit.datasets import mnist
    from robustkit.models import LeNet

    x_train, y_train = mnist("train").tensors
    x_test, y_test = mnist("test")[:500]

    def train(objective, steps=150):
        torch.manual_seed(0)
        model = LeNet()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for step in range(steps):
            idx = slice(step * 64, (step + 1) * 64)
            out = objective(model, x_train[idx], y_train[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        return model.eval()

    def grad_norm(model):
        x = x_test.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y_test, reduction="sum"), x)
        return float(g.flatten(1).norm(dim=1).median())

    plain = train(TemperatureCrossEntropy(1.0))
    teacher = train(TemperatureCrossEntropy(100.0))
    student = train(Distillation(teacher, temperature=100.0))
    with torch.no_grad():
        acc_plain = float((plain(x_test).argmax(1) == y_test).float().mean())
        acc_student = float((student(x_test).argmax(1) == y_test).float().mean())
    # 150 steps are enough for the masking, not for the student's accuracy: at T = 100 its logits must grow ~100x
    assert acc_student > 0.5 and acc_plain > 0.85, (acc_student, acc_plain)
    assert grad_norm(student) < 1e-2 * grad_norm(plain), (grad_norm(student), grad_norm(plain))
