"""Both foundation ops inside one torch.compile(fullgraph=True) function: one attack step."""
import torch

import robustkit.ops as ops


def attack_step(x_adv, x, weight, y, momentum):
    x_adv = x_adv.detach().requires_grad_(True)
    logits = torch.stack([x_adv.flatten(1) @ weight, x_adv.flatten(1) @ (2 * weight)])  # a 2-model "ensemble"
    loss = ops.ensemble_temperature_ce(logits, y, temperature=4.0, hard_weight=1.0)
    (grad,) = torch.autograd.grad(loss, x_adv)
    x_adv = x_adv.detach()
    ops.sign_momentum_step(x_adv, x, grad, momentum, step_size=0.01, eps=0.03)
    return x_adv, momentum


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 6, 6, generator=gen)
    weight = torch.randn(36, 10, generator=gen)
    y = torch.randint(0, 10, (4,), generator=gen)
    eager_x, eager_m = attack_step(x.clone(), x, weight, y, torch.zeros_like(x))
    compiled = torch.compile(attack_step, fullgraph=True, backend="aot_eager")
    # torch.autograd.grad inside a compiled region needs dynamo's autograd tracing.
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        comp_x, comp_m = compiled(x.clone(), x, weight, y, torch.zeros_like(x))
    torch.testing.assert_close(comp_x, eager_x)
    torch.testing.assert_close(comp_m, eager_m)
    assert (comp_x - x).abs().max() > 0
