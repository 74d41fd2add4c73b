"""HGD's loss and gradient against a naive float64 implementation; guide layers; the frozen target."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.defenses.denoiser import DUNet
from robustkit.defenses.hgd import HGDObjective, frozen
from tests.reference.input_defenses import hgd_loss_loop


def _target():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).double().eval()


def _shift_attack(x, y):
    return (x + 0.05).clamp(0, 1)


@pytest.mark.parametrize("guide", ["logits", "pixel", "features:1"])
def test_loss_and_gradient_equal_naive_float64(guide, one_thread):
    model = _target()
    den = DUNet(1, (3, 4)).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 5, (4,))
    out = HGDObjective(model, [_shift_attack], guide=guide)(den, x, y)
    grads = torch.autograd.grad(out.loss, list(den.parameters()))

    x_adv = _shift_attack(x, y)
    den.zero_grad()
    x_hat = x_adv - den(x_adv)
    if guide == "logits":
        a, b = model(x_hat), model(x).detach()
    elif guide == "pixel":
        a, b = x_hat, x
    else:
        a, b = model[:2](x_hat), model[:2](x).detach()
    naive = hgd_loss_loop(list(a), list(b))
    naive_grads = torch.autograd.grad(naive, list(den.parameters()))
    torch.testing.assert_close(out.loss, naive, rtol=1e-12, atol=1e-12)
    for g, h in zip(grads, naive_grads):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)
    assert out.logits.shape == (4, 5)


def test_unknown_guide_layer_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: 0, 1, 2, 3"):
        HGDObjective(_target(), [_shift_attack], guide="features:fc9")
    with pytest.raises(ValueError, match="guide"):
        HGDObjective(_target(), [_shift_attack], guide="middle")
    with pytest.raises(ValueError, match="attacks"):
        HGDObjective(_target(), [], guide="logits")


def test_shape_changing_denoiser_is_refused():
    obj = HGDObjective(_target(), [_shift_attack])
    with pytest.raises(ValueError, match="denoiser's output shape"):
        obj(nn.Conv2d(1, 1, 3).double(), torch.rand(2, 1, 8, 8, dtype=torch.float64), torch.zeros(2, dtype=torch.long))


def test_round_robin_over_attacks_and_target_untouched(one_thread):
    calls = []
    model = _target()
    attacks = [lambda x, y: calls.append("a") or x, lambda x, y: calls.append("b") or x]
    obj = HGDObjective(model, attacks)
    den = DUNet(1, (3, 4)).double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with frozen(model):
        for _ in range(3):
            obj(den, x, torch.zeros(2, dtype=torch.long)).loss.backward()
        assert all(not p.requires_grad for p in model.parameters())
    assert calls == ["a", "b", "a"]
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not model.training
