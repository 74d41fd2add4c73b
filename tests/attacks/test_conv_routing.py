"""The attacks' routing of first-layer convolutions to robustkit's input-gradient kernel on CPU
(robustkit.attacks._conv_routing): same gradients as PyTorch's, parameter gradients only when asked for,
double backward, the convolutions it must leave alone, and the attacks' results with it on and off."""
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import robustkit as rk
from robustkit.attacks._conv_routing import routed_convolutions
from tests.attacks._tiny import tiny_batch, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(dtype=torch.float32, c_in=1, **conv):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c_in, 6, 5, padding=2, **conv), nn.ReLU(inplace=True), nn.Conv2d(6, 4, 3),
                         nn.ReLU(), nn.Flatten(), nn.LazyLinear(10)).to(dtype).eval()


def _input_grad(model, x, routed, create_graph=False):
    x = x.clone().requires_grad_(True)
    with routed_convolutions(routed):
        out = model(x)
    (grad,) = torch.autograd.grad((out * torch.arange(10, dtype=out.dtype)).sum(), x, create_graph=create_graph)
    return grad


class _CountConvolutionBackward(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.append(tuple(args[-1]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, dict(rtol=1e-5, atol=1e-6)),
                                        (torch.float64, dict(rtol=1e-12, atol=1e-14))])
@pytest.mark.parametrize("c_in", [1, 3])
def test_input_gradient_equals_torch(dtype, tol, c_in):
    model = _model(dtype, c_in)
    x = torch.rand(4, c_in, 12, 12, dtype=dtype)
    model(x)  # materialise the lazy layer
    torch.testing.assert_close(_input_grad(model, x, True), _input_grad(model, x, False), **tol)


def test_parameter_gradients_are_torchs_and_skipped_when_nobody_reads_them():
    model = _model()
    x = torch.rand(3, 1, 12, 12)
    model(x)
    first = model[0]
    grads = {}
    for routed in (False, True):
        model.zero_grad()
        xv = x.clone().requires_grad_(True)
        with routed_convolutions(routed):
            model(xv).square().sum().backward()
        grads[routed] = (xv.grad, first.weight.grad.clone(), first.bias.grad.clone())
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # an attack's autograd.grad(..., inputs=x): the routed conv computes no weight gradient, PyTorch's second
    # conv computes only its input gradient
    with _CountConvolutionBackward() as counter:
        _input_grad(model, x, True)
    assert counter.masks == [(True, False, False)]


def test_double_backward_reaches_the_weights():
    """Deep Defense trains through the input gradient: d/dθ of a function of it must be the same."""
    model = _model(torch.float64)
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    model(x)
    weights = {}
    for routed in (False, True):
        model.zero_grad()
        _input_grad(model, x, routed, create_graph=True).square().sum().backward()
        # (biases the input gradient does not depend on get no gradient, routed or not)
        weights[routed] = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    assert weights[True][0] is not None and weights[True][0].abs().sum() > 0  # the routed conv's weight
    for a, b in zip(weights[True], weights[False]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["stride", "groups", "four_channels", "string_padding", "no_grad_input",
                                  "autocast"])
def test_leaves_other_convolutions_alone(case):
    conv = {"stride": dict(stride=2), "groups": dict(groups=2)}.get(case, {})
    c_in = {"groups": 2, "four_channels": 4}.get(case, 1)
    layer = nn.Conv2d(c_in, 6, 3, padding="same" if case == "string_padding" else 1, **conv)
    x = torch.rand(2, c_in, 8, 8, requires_grad=case != "no_grad_input")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast")
    with routed_convolutions(), autocast:
        out = layer(x)
    assert "ConvWithKernelInputGrad" not in type(out.grad_fn).__name__


def test_routes_the_eligible_first_layer():
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    with routed_convolutions():
        out = nn.Conv2d(1, 6, 3, padding=1)(x)
    assert "ConvWithKernelInputGrad" in type(out.grad_fn).__name__
    with routed_convolutions(False):
        out = nn.Conv2d(1, 6, 3, padding=1)(x)
    assert "ConvWithKernelInputGrad" not in type(out.grad_fn).__name__


def test_attacks_agree_with_routing_on_and_off():
    model = tiny_cnn(dtype=torch.float64)
    x, y = tiny_batch(dtype=torch.float64)
    for make in (lambda m, c: rk.attacks.PGD(m, eps=0.1, step_size=0.02, steps=5, random_start=False,
                                            conv_input_grad=c),
                 lambda m, c: rk.attacks.MIFGSM(m, eps=0.1, steps=5, conv_input_grad=c)):
        torch.testing.assert_close(make(model, "robustkit")(x, y), make(model, "torch")(x, y), rtol=0, atol=1e-12)
    on, off = (rk.attacks.DeepFool(model, conv_input_grad=c).run(x, y) for c in ("robustkit", "torch"))
    torch.testing.assert_close(on.adv, off.adv, rtol=1e-9, atol=1e-10)
    assert torch.equal(on.steps, off.steps)


def test_bad_conv_input_grad_is_a_named_error():
    with pytest.raises(ValueError, match="conv_input_grad must be 'robustkit' or 'torch'"):
        rk.attacks.PGD(tiny_cnn(), conv_input_grad="fast")
