"""BPDA: exact forward, approximate backward, and an attack through a JPEG-like quantiser."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustkit.attacks.apgd import APGD
from robustkit.attacks.bpda import BPDA

pytestmark = pytest.mark.usefixtures("one_thread")


def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


class JpegLike(nn.Module):
    """4x4 block DCT, coefficients rounded to multiples of ``step``, inverse DCT, clipped: a lossy,
    piecewise-constant map whose gradient is zero almost everywhere (like JPEG's quantisation)."""

    def __init__(self, block: int = 4, step: float = 0.25):
        super().__init__()
        self.block, self.step = block, step
        self.register_buffer("dct", _dct_matrix(block).float())

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.block
        tiles = x.reshape(b, c, h // n, n, w // n, n).transpose(3, 4)           # [b, c, H/n, W/n, n, n]
        coef = self.dct @ tiles @ self.dct.T
        coef = torch.round(coef / self.step) * self.step
        back = self.dct.T @ coef @ self.dct
        return back.transpose(3, 4).reshape(b, c, h, w).clamp(0, 1)


def test_forward_is_exact_and_backward_is_identity():
    quant = JpegLike()
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    out = BPDA(quant)(x)
    torch.testing.assert_close(out, quant(x.detach()))
    upstream = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, upstream)
    torch.testing.assert_close(grad, upstream)
    (zero,) = torch.autograd.grad(quant(x), x, upstream)
    assert float(zero.abs().max()) == 0.0  # what an attack would see without BPDA


def test_backward_uses_the_approximation_and_leaves_its_parameters_alone():
    approx = nn.Conv2d(1, 1, 3, padding=1)
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    approx = approx.double()
    out = BPDA(lambda t: torch.round(t * 3) / 3, approx=approx)(x)
    upstream = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, upstream)
    x2 = x.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(approx(x2), x2, upstream)
    torch.testing.assert_close(grad, ref)
    assert all(p.grad is None for p in approx.parameters())


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="approx=None.*keep the shape"):
        BPDA(lambda t: t[:, :, :2])(torch.rand(1, 1, 4, 4, requires_grad=True))
    with pytest.raises(TypeError, match="preprocess must be"):
        BPDA(3)
    with pytest.raises(TypeError, match="approx must be"):
        BPDA(lambda t: t, approx="identity")


def test_attack_through_a_jpeg_like_quantiser(mnist_lenet):
    classifier, x, y = mnist_lenet
    x, y = x[:32], y[:32]
    defended = nn.Sequential(JpegLike(), classifier).eval()
    with torch.no_grad():
        keep = defended(x).argmax(1) == y
    x, y = x[keep], y[keep]
    masked = APGD(defended, eps=0.2, steps=20).run(x, y)
    through = APGD(nn.Sequential(BPDA(JpegLike()), classifier).eval(), eps=0.2, steps=20).run(x, y)
    with torch.no_grad():  # judged on the real defended model
        broken = defended(through.adv).argmax(1) != y
    assert float(masked.success.float().mean()) <= 0.1
    assert float(broken.float().mean()) >= 0.8, float(broken.float().mean())
