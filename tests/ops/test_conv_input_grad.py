"""robustkit.ops.conv2d_input_grad beyond the op-test harness (test_opinfo.py: spec, naive, PyTorch's own backward,
layouts, gradcheck and gradgradcheck, opcheck, compile): layouts against each other, zero output channels, errors,
huge shapes, and the CUDA kernel's math run on the host."""
import re

import pytest
import torch

from robustkit.ops import conv2d_input_grad, reference
from tests.conftest import devices


# (batch, C_in, C_out, (KH, KW), (ph, pw), (H, W)): widths below, at and above the float kernel's 32-pixel
# chunk, rectangular kernels and images, padding 0, "same" and larger than the kernel
SHAPES = [
    (3, 1, 6, (5, 5), (2, 2), (28, 28)),
    (2, 3, 4, (3, 3), (1, 1), (32, 32)),
    (2, 2, 3, (3, 5), (0, 2), (9, 33)),
    (1, 1, 2, (1, 1), (0, 0), (5, 70)),
    (2, 4, 5, (5, 3), (3, 4), (6, 7)),
    (1, 3, 1, (7, 7), (3, 3), (11, 12)),
]


def _inputs(shape, dtype, device, seed):
    batch, c_in, c_out, (k_h, k_w), (p_h, p_w), (h, w) = shape
    g = torch.Generator().manual_seed(seed)
    out_h, out_w = h + 2 * p_h - k_h + 1, w + 2 * p_w - k_w + 1
    grad = torch.randn(batch, c_out, out_h, out_w, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c_in, k_h, k_w, generator=g, dtype=torch.float64)
    return grad.to(dtype=dtype, device=device), weight.to(dtype=dtype, device=device), (h, w), (p_h, p_w)


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_and_empty(device):
    grad, weight, size, padding = _inputs(SHAPES[0], torch.float32, device, seed=3)
    grad_cl = grad.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv2d_input_grad(grad_cl, weight, size, padding),
                               conv2d_input_grad(grad, weight, size, padding))
    assert conv2d_input_grad(grad[:0], weight, size, padding).shape == (0, 1, 28, 28)
    zero_out = conv2d_input_grad(grad[:, :0], weight[:0], size, padding)  # no output channels: zero gradient
    assert torch.equal(zero_out, torch.zeros(3, 1, 28, 28, device=device))


@pytest.mark.parametrize("make, message", [
    (lambda: (torch.randn(2, 3, 4), torch.randn(3, 1, 3, 3), (6, 6), (0, 0)),
     "grad_output must be a 4-D [B, C_out, OH, OW] tensor"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.randn(3, 1, 3), (6, 6), (0, 0)),
     "weight must be a 4-D [C_out, C_in, KH, KW] tensor"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.randn(3, 1, 3, 3).double(), (6, 6), (0, 0)), "weight must be"),
    (lambda: (torch.randn(2, 3, 4, 4).half(), torch.randn(3, 1, 3, 3).half(), (6, 6), (0, 0)),
     "grad_output must be float32 or float64"),
    (lambda: (torch.randn(2, 2, 4, 4), torch.randn(3, 1, 3, 3), (6, 6), (0, 0)),
     "grad_output's channels (2) must equal weight's C_out (3)"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.randn(3, 1, 3, 3), (7, 6), (0, 0)),
     "grad_output's plane must be [H + 2 pad_h - KH + 1, W + 2 pad_w - KW + 1] = [5, 4]"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.randn(3, 1, 3, 3), (6, 6), (-1, 0)), "padding must be"),
    (lambda: (torch.randn(2, 3, 4, 4), torch.randn(3, 1, 3, 3), (6,), (0, 0)), "input_size must be [H, W]"),
])
def test_bad_input_names_the_argument(make, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        conv2d_input_grad(*make())
    with pytest.raises(TypeError, match="must be tensors"):
        conv2d_input_grad([1.0], torch.randn(1, 1, 1, 1), (1, 1))


# Regression tests from the reliability review (shape overflow, empty planes) and the host path of the
# CUDA kernel's math.

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("input_size, padding, message", [
    ((10, 10), (2**63 - 1, 0), "padding must be [pad_h, pad_w] with 0 <= both <= 2147483647"),
    ((10, 10), (0, 2**40), "padding must be"),
    ((2**40, 10), (0, 0), "input_size must be [H, W] with 0 <= H, W <= 2147483647"),
])
def test_huge_shapes_are_an_error_not_an_overflow(dtype, input_size, padding, message):
    """H + 2 pad_h - KH + 1 in int64 wrapped for padding 2^63 - 1, passed the check and read out of bounds."""
    grad = torch.randn(2, 4, 6, 8, dtype=dtype)
    weight = torch.randn(4, 1, 3, 3, dtype=dtype)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        conv2d_input_grad(grad, weight, input_size, padding)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_output_plane_is_an_error(device, dtype):
    """OW = 0 (a kernel wider than the padded input): the forward used to return zeros while its backward (and
    aten's conv2d) raised. It is now an error up front, as for the convolution itself."""
    grad = torch.randn(1, 2, 4, 0, dtype=dtype, device=device)
    weight = torch.randn(2, 1, 3, 7, dtype=dtype, device=device)
    with pytest.raises(RuntimeError, match=re.escape("grad_output's plane must be non-empty")):
        conv2d_input_grad(grad, weight, (6, 6), (0, 0))
    with pytest.raises(RuntimeError):  # PyTorch refuses the convolution with the same shapes
        torch.nn.functional.conv2d(torch.randn(1, 1, 6, 6, dtype=dtype, device=device), weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_cuda_kernel_math_on_the_host_matches_the_reference(dtype, shape):
    """_conv2d_input_grad_math runs input_grad_at (the per-pixel sum the CUDA kernel computes) on the CPU, so the
    CPU suite checks the GPU's math too: it must equal the reference and the fast CPU kernels."""
    grad, weight, size, padding = _inputs(shape, dtype, "cpu", seed=11)
    got = torch.ops.robustkit._conv2d_input_grad_math(grad, weight, list(size), list(padding))
    expected = reference.conv2d_input_grad(grad, weight, size, padding)
    fast = conv2d_input_grad(grad, weight, size, padding)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.double(), expected, **tol)
    torch.testing.assert_close(got, fast, **tol)
