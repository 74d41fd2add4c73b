"""Deep Defense against the per-sample, per-candidate reference written from Eq. 1-6, in float64."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.defenses.deep_defense import DeepDefense
from tests.reference.deep_defense import deep_defense_loss


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 5))


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 5))


def _bn():
    m = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5))
    m[1].running_mean.uniform_(-0.2, 0.2)
    m[1].running_var.uniform_(0.5, 2.0)
    return m


@pytest.mark.parametrize("make", [_mlp, _cnn, _bn], ids=["mlp", "cnn-maxpool", "batchnorm-eval"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_loss_and_weight_gradient_equal_naive_float64(make, norm, one_thread):
    torch.manual_seed(0)
    model = make().double()
    x = torch.rand(6, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    obj = DeepDefense(lam=15.0, c=25.0, d=5.0, steps=3, overshoot=0.02, candidates=4, norm=norm)
    model.train()
    out = obj(model, x, y)
    assert model.training                      # the mode is restored
    grads = torch.autograd.grad(out.loss, list(model.parameters()))
    model.eval()
    ref = deep_defense_loss(model, x, y, 15.0, 25.0, 5.0, 3, 0.02, 4, norm)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    for g, h in zip(grads, ref_grads):
        torch.testing.assert_close(g, h, rtol=1e-8, atol=1e-10)
    # the regulariser's gradient is not silently zero
    reg_grads = torch.autograd.grad(obj(model, x, y).metrics["regularizer"].new_tensor(0) + obj(model, x, y).loss,
                                    list(model.parameters()))
    assert any(bool(g.abs().sum() > 0) for g in reg_grads)


def test_gradcheck_of_the_regularizer_wrt_mlp_weights(one_thread):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    names = [n for n, _ in net.named_parameters()]
    x = torch.rand(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    obj = DeepDefense(lam=1.0, c=2.0, d=1.0, steps=2, candidates=None)

    class Functional(nn.Module):           # the weights as inputs, so gradcheck can perturb them
        def __init__(self, params):
            super().__init__()
            self.params = params

        def forward(self, inp):
            return torch.func.functional_call(net, dict(zip(names, self.params)), (inp,))

    def regularized_loss(*params):
        return obj(Functional(params), x, y).loss

    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    assert torch.autograd.gradcheck(regularized_loss, params, eps=1e-6, atol=1e-5)


def test_batchnorm_statistics_frozen_and_metrics(one_thread):
    torch.manual_seed(0)
    model = _bn()
    before = model[1].running_mean.clone()
    out = DeepDefense(steps=2)(model.train(), torch.rand(4, 1, 6, 6), torch.randint(0, 5, (4,)))
    assert torch.equal(model[1].running_mean, before)
    assert set(out.metrics) >= {"ce", "regularizer", "rho", "finished_early"}
    assert out.logits.shape == (4, 5)


@pytest.mark.parametrize("kwargs, name", [(dict(lam=-1.0), "lam"), (dict(c=-2.0), "c"), (dict(d=-0.5), "d"),
                                          (dict(steps=0), "steps"), (dict(candidates=1), "candidates"),
                                          (dict(norm="l1"), "norm"), (dict(overshoot=-0.1), "overshoot"),
                                          (dict(jacobian="vmap"), "jacobian")])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=rf"DeepDefense: {name}"):
        DeepDefense(**kwargs)


class _OnceDifferentiable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0).to(g.dtype)


class _OnceRelu(nn.Module):
    def forward(self, x):
        return _OnceDifferentiable.apply(x)


def test_a_layer_that_cannot_be_differentiated_twice_is_named(one_thread):
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), _OnceRelu(), nn.Linear(8, 5))
    with pytest.raises(ValueError, match=r"layer '2' \(_OnceRelu\)"):
        DeepDefense(steps=2)(model, torch.rand(3, 1, 6, 6), torch.randint(0, 5, (3,)))


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn-maxpool"])
def test_batched_jacobian_equals_loop(make, one_thread):
    torch.manual_seed(2)
    model = make().double().eval()
    x = torch.rand(5, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (5,))
    loop = DeepDefense(steps=3, candidates=4)(model, x, y).loss
    batched = DeepDefense(steps=3, candidates=4, jacobian="batched")(model, x, y).loss
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
    g_loop = torch.autograd.grad(loop, list(model.parameters()))
    g_batched = torch.autograd.grad(batched, list(model.parameters()))
    for a, b in zip(g_batched, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make, layer, jacobian", [
    (_mlp, "1", "loop"), (_mlp, "3", "loop"), (_mlp, "1", "batched"), (_cnn, "0", "loop"),
    (_cnn, "4.weight", "loop"), (_cnn, "0", "batched"), (_bn, "1", "loop")],
    ids=["mlp-first", "mlp-last", "mlp-first-batched", "cnn-conv", "cnn-fc-weight-only", "cnn-conv-batched",
         "batchnorm-affine"])
def test_layers_masks_the_regularizer_gradient_to_one_layer(make, layer, jacobian, one_thread):
    """Fig. 4's masking: the selected parameters get the full objective's gradient (CE + regulariser, equal to
    the float64 reference), every other parameter the cross-entropy's only; the loss itself is unchanged."""
    torch.manual_seed(3)
    model = make().double().eval()
    x = torch.rand(6, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    settings = dict(lam=15.0, c=5.0, d=5.0, steps=3, overshoot=0.02, candidates=4, jacobian=jacobian)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    masked = DeepDefense(**settings, layers=[layer])(model, x, y)
    full = DeepDefense(**settings)(model, x, y)
    torch.testing.assert_close(masked.loss, full.loss, rtol=1e-12, atol=1e-12)
    g_masked = torch.autograd.grad(masked.loss, params)
    g_full = torch.autograd.grad(full.loss, params)
    g_ce = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), params)
    ref = deep_defense_loss(model, x, y, 15.0, 5.0, 5.0, 3, 0.02, 4, "l2")
    g_ref = torch.autograd.grad(ref, params)
    selected = [n == layer or n.startswith(layer + ".") for n in names]
    assert any(selected) and not all(selected)
    for name, sel, gm, gf, gc, gr in zip(names, selected, g_masked, g_full, g_ce, g_ref):
        if sel:
            torch.testing.assert_close(gm, gf, rtol=1e-10, atol=1e-12, msg=f"{name}: not the full gradient")
            torch.testing.assert_close(gm, gr, rtol=1e-8, atol=1e-10, msg=f"{name}: not the reference's")
            assert not torch.allclose(gm, gc), f"{name}: the regulariser's gradient did not reach it"
        else:
            torch.testing.assert_close(gm, gc, rtol=1e-10, atol=1e-12, msg=f"{name}: not the CE-only gradient")


def test_layers_bad_names_are_named(one_thread):
    with pytest.raises(ValueError, match="DeepDefense: layers must be"):
        DeepDefense(layers=[])
    with pytest.raises(ValueError, match="DeepDefense: layers must be"):
        DeepDefense(layers=[3])
    obj = DeepDefense(steps=2, layers=["fc9"])
    with pytest.raises(ValueError, match=r"DeepDefense: layers name 'fc9' matches no parameter.*its layers: 1, 3"):
        obj(_mlp(), torch.rand(3, 1, 6, 6), torch.randint(0, 5, (3,)))
    assert "layers=['1']" in repr(DeepDefense(layers="1"))
