"""EOT: the batched estimate equals the mean of separate forwards, and on a randomized model (random resize
and pad) it gives a lower robust accuracy than attacking one forward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustkit.attacks.apgd import APGD
from robustkit.attacks.dlr import attack_loss_and_grad
from robustkit.attacks.eot import eot_loss_and_grad
from tests.attacks._tiny import labelled_by, tiny_batch, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


class RandomResizePadTest(nn.Module):
    """Each image shrunk by a random factor in [min_scale, 1] and placed at a random offset on a zero canvas of
    the input size, one ``grid_sample`` for the batch (randomness per row), then ``model``."""

    def __init__(self, model: nn.Module, min_scale: float = 0.7):
        super().__init__()
        self.model, self.min_scale = model, min_scale

    def forward(self, x):
        b = x.shape[0]
        scale = torch.empty(b, device=x.device).uniform_(self.min_scale, 1.0)
        room = 1.0 - scale
        shift_x = (torch.rand(b, device=x.device) * 2 - 1) * room
        shift_y = (torch.rand(b, device=x.device) * 2 - 1) * room
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = 1 / scale
        theta[:, 1, 1] = 1 / scale
        theta[:, 0, 2] = -shift_x / scale
        theta[:, 1, 2] = -shift_y / scale
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return self.model(F.grid_sample(x, grid, padding_mode="zeros", align_corners=False))


class RowNoise(nn.Module):
    """Adds seeded per-row Gaussian noise before ``model`` (one draw per row per call)."""

    def __init__(self, model, sigma=0.1):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn_like(x))


def test_batched_eot_equals_the_mean_over_separate_forwards():
    model = RowNoise(tiny_cnn(seed=0, dtype=torch.float64))
    x, y = tiny_batch(batch=5, dtype=torch.float64)
    loss_grad = lambda z, yy, t: attack_loss_and_grad("ce", z, yy, t)  # noqa: E731
    torch.manual_seed(7)
    loss, grad, logits = eot_loss_and_grad(model, x, loss_grad, y, None, eot=4, batched=True)
    torch.manual_seed(7)
    noise = torch.randn(4 * 5, *x.shape[1:], dtype=torch.float64)  # the same draws, copy-major
    grads, losses = [], []
    for k in range(4):
        xv = x.clone().requires_grad_(True)
        z = model.model(xv + 0.1 * noise[k * 5:(k + 1) * 5])
        value = F.cross_entropy(z, y, reduction="none")
        (g,) = torch.autograd.grad(value.sum(), xv)
        grads.append(g)
        losses.append(value.detach())
    torch.testing.assert_close(grad, torch.stack(grads).mean(0))
    torch.testing.assert_close(loss, torch.stack(losses).mean(0))
    torch.manual_seed(7)
    loss_loop, grad_loop, _ = eot_loss_and_grad(model, x, loss_grad, y, None, eot=4, batched=False)
    assert grad_loop.shape == grad.shape and not torch.equal(grad_loop, grad)  # other draws, same estimator


def test_bad_eot_names_the_argument():
    with pytest.raises(ValueError, match="eot must be an int >= 1"):
        APGD(tiny_cnn(), eps=0.1, eot=0)


def _expected_accuracy(model, x, y, draws=16):
    with torch.no_grad():
        return torch.stack([(model(x).argmax(1) == y).float() for _ in range(draws)]).mean()


@pytest.mark.slow
def test_eot_beats_one_forward_on_random_resize_and_pad(mnist_lenet):
    base, x, y = mnist_lenet
    x, y = x[:64], y[:64]
    defended = RandomResizePadTest(base).eval()
    torch.manual_seed(0)
    one = APGD(defended, eps=0.2, steps=20, eot=1).run(x, y)
    torch.manual_seed(0)
    many = APGD(defended, eps=0.2, steps=20, eot=10).run(x, y)
    torch.manual_seed(1)
    acc_one = _expected_accuracy(defended, one.adv, y)
    acc_many = _expected_accuracy(defended, many.adv, y)
    print(f"expected accuracy: one forward {float(acc_one):.3f}, EOT-10 {float(acc_many):.3f}")
    assert acc_many < acc_one - 0.15, (float(acc_many), float(acc_one))


# ---- eot= and restarts= on the gradient family ------------------------------------------------------------
def test_pgd_eot_gradient_is_the_mean_over_copies():
    from robustkit.attacks import PGD

    model = RowNoise(tiny_cnn(seed=1, dtype=torch.float64))
    x, y = tiny_batch(batch=4, dtype=torch.float64)
    atk = PGD(model, eps=0.1, eot=3)
    torch.manual_seed(3)
    logits, grad = atk._loss_gradient(x, y, False)
    torch.manual_seed(3)
    noise = torch.randn(3 * 4, *x.shape[1:], dtype=torch.float64)
    xv = x.clone().requires_grad_(True)
    z = model.model(xv.repeat(3, 1, 1, 1) + 0.1 * noise)
    (ref,) = torch.autograd.grad(F.cross_entropy(z, y.repeat(3), reduction="sum") / 3, xv)
    torch.testing.assert_close(grad, ref)
    torch.testing.assert_close(logits, z.detach().view(3, 4, -1).mean(0))


@pytest.mark.parametrize("name", ["FGSM", "IFGSM", "PGD", "MIFGSM"])
def test_restarts_only_add_successes_and_bad_values_are_named(name):
    import robustkit.attacks as A

    cls = getattr(A, name)
    model = tiny_cnn(seed=4)
    x, _ = tiny_batch(batch=16, seed=6)
    y = labelled_by(model, x)
    one = cls(model, eps=0.03, seed=0).run(x, y)
    many = cls(model, eps=0.03, seed=0, restarts=4).run(x, y)
    assert bool((many.success | ~one.success).all())  # every sample broken once stays broken
    assert bool((many.linf <= 0.03 + 1e-6).all())
    with pytest.raises(ValueError, match="restarts must be an int >= 1"):
        cls(model, eps=0.03, restarts=0)
    with pytest.raises(ValueError, match="eot must be an int >= 1"):
        cls(model, eps=0.03, eot=0)
