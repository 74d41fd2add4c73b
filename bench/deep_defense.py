"""Deep Defense training step: robustkit's objective against the implementations a researcher would write.

For the seed's MNIST MLP (784-500-150-10) and its Caffe LeNet, batch 100, steps 5, 10 candidates, one
training step (objective forward, backward to the weights) of:

- ``robustkit``: ``rk.defenses.DeepDefense`` (fused ``deepfool_step``, candidate gradients by one backward each
  with ``create_graph``, samples dropped once their prediction changes);
- ``naive``: the per-sample, per-candidate loop of ``tests/reference/deep_defense.py``, written from the
  seed's Eq. 1-6 with plain autograd;
- ``torch.func``: a batched pure-PyTorch version, every sample's Jacobian from ``vmap(jacrev(...))``, DeepFool's
  step in PyTorch ops and a mask for finished samples;
- ``floor``: the same forwards, ``create_graph`` input gradients and double backward as robustkit's run
  (the batch sizes of its forwards are recorded), with none of DeepFool's bookkeeping.

Correctness first: robustkit's loss and weight gradient equal the naive implementation's in float64, and the
torch.func version's loss equals robustkit's, before anything is timed.

    python bench/deep_defense.py                  # both models, 3 rounds (naive: 1 round)
    python bench/deep_defense.py --tiny           # a quick check of the script
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap

import harness
from data import mnist_split

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from robustkit.defenses import DeepDefense  # noqa: E402
from robustkit.models import CaffeLeNet, DeepDefenseMLP  # noqa: E402
from tests.reference.deep_defense import deep_defense_loss  # noqa: E402

SETTINGS = dict(lam=15.0, c=25.0, d=5.0, steps=5, overshoot=0.02, candidates=10)


OBJECTIVES = {}


def robustkit_step(model, x, y, jacobian="loop"):
    model.zero_grad(set_to_none=True)
    objective = OBJECTIVES.setdefault(jacobian, DeepDefense(**SETTINGS, jacobian=jacobian))
    out = objective(model, x, y)
    out.loss.backward(inputs=list(model.parameters()))
    return out.loss.detach()


def naive_step(model, x, y):
    model.zero_grad(set_to_none=True)
    s = SETTINGS
    loss = deep_defense_loss(model, x, y, s["lam"], s["c"], s["d"], s["steps"], s["overshoot"], s["candidates"])
    loss.backward(inputs=list(model.parameters()))
    return loss.detach()


def torch_func_loss(model, x, y):
    """Deep Defense with every Jacobian from torch.func, batched over the samples, a mask for finished ones."""
    s = SETTINGS
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    def single(p, xi):
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),))[0]

    jacobian = vmap(jacrev(single, argnums=1), in_dims=(None, 0))
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    pred = logits.detach().argmax(1)
    others = logits.detach().scatter(1, pred.unsqueeze(1), float("-inf"))
    classes = others.topk(min(s["candidates"], logits.shape[1]) - 1, dim=1).indices         # [B, K]
    r_total = torch.zeros_like(x).flatten(1)
    active = torch.ones(x.shape[0], dtype=torch.bool)
    for i in range(s["steps"]):
        xi = x + (1 + s["overshoot"]) * r_total.view_as(x)
        z = model(xi) if i else logits
        active = active & (z.detach().argmax(1) == pred)
        if not bool(active.any()):
            break
        jac = jacobian(params, xi).flatten(2)                                               # [B, C, D]
        f = z.gather(1, classes) - z.gather(1, pred.unsqueeze(1))                           # [B, K]
        w = jac.gather(1, classes.unsqueeze(2).expand(-1, -1, jac.shape[2])) - jac.gather(
            1, pred.view(-1, 1, 1).expand(-1, 1, jac.shape[2]))                            # [B, K, D]
        norm2 = (w * w).sum(2)
        best = (f.detach().abs() / norm2.detach().clamp_min(1e-24).sqrt()).argmin(1)
        f_l = f.gather(1, best.unsqueeze(1)).squeeze(1)
        w_l = w[torch.arange(w.shape[0]), best]
        step = ((f_l.abs() + 1e-4) / norm2.gather(1, best.unsqueeze(1)).squeeze(1).clamp_min(1e-24)).unsqueeze(1) * w_l
        r_total = r_total + active.unsqueeze(1).to(step.dtype) * step
    dx = (1 + s["overshoot"]) * r_total
    rho = dx.norm(dim=1) / x.flatten(1).norm(dim=1)
    correct = pred == y
    penalty = torch.where(correct, torch.exp(-s["c"] * rho), torch.exp(s["d"] * rho))
    return ce + s["lam"] * penalty.mean()


def torch_func_step(model, x, y):
    model.zero_grad(set_to_none=True)
    loss = torch_func_loss(model, x, y)
    loss.backward(inputs=list(model.parameters()))
    return loss.detach()


def forward_sizes(model, x, y):
    """The batch sizes of the forwards robustkit's objective runs (the floor replays them)."""
    sizes = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        robustkit_step(model, x, y)
    finally:
        handle.remove()
    return sizes


def floor_step(model, x, y, sizes, grads_per_forward):
    """The forwards, create_graph input gradients and double backward of robustkit's run, nothing else."""
    model.zero_grad(set_to_none=True)
    total = 0.0
    delta = torch.zeros_like(x)
    ce = None
    for size in sizes:
        xi = (x[:size] + delta[:size]).detach().requires_grad_(True) if ce is None else x[:size] + delta[:size]
        z = model(xi)
        if ce is None:
            ce = F.cross_entropy(z, y)
        for k in range(grads_per_forward):
            (g,) = torch.autograd.grad(z[:, k].sum(), xi, create_graph=True, retain_graph=True)
            total = total + g.square().sum()
            if k == 0:
                delta = torch.cat([1e-3 * g, delta[size:]]) if size < x.shape[0] else 1e-3 * g
    (ce + 1e-3 * total).backward(inputs=list(model.parameters()))


def check(model, x, y):
    m64 = type(model)().double()
    m64.load_state_dict(model.state_dict())
    x64 = x[:8].double()
    ours = DeepDefense(**SETTINGS)(m64, x64, y[:8]).loss
    g_ours = torch.autograd.grad(ours, list(m64.parameters()))
    ref = deep_defense_loss(m64.eval(), x64, y[:8], *[SETTINGS[k] for k in ("lam", "c", "d", "steps", "overshoot",
                                                                             "candidates")])
    g_ref = torch.autograd.grad(ref, list(m64.parameters()))
    ours, ref = ours, ref
    harness.check_close("DeepDefense loss vs naive (float64)", ours.detach(), ref.detach(), rtol=1e-9, atol=1e-12)
    for a, b in zip(g_ours, g_ref):
        harness.check_close("DeepDefense weight gradient vs naive (float64)", a, b, rtol=1e-7, atol=1e-10)
    tf = torch_func_loss(m64, x64, y[:8])
    harness.check_close("torch.func version vs robustkit (float64)", tf, ours, rtol=1e-9, atol=1e-12)
    batched = DeepDefense(**SETTINGS, jacobian="batched")(m64, x64, y[:8]).loss
    harness.check_close("DeepDefense jacobian='batched' vs 'loop' (float64)", batched, ours, rtol=1e-9, atol=1e-12)
    return {"loss_vs_naive_float64": abs(float(ours - ref)), "torch_func_vs_ours": abs(float(tf - ours))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--tiny", action="store_true", help="batch 8, one round: checks the script")
    args = harness.parse_arguments(parser, threads=1, clock="cpu")
    if args.tiny:
        args.batch, args.rounds = 8, 1
    x_all, y_all = mnist_split("test")
    x, y = x_all[:args.batch].contiguous(), y_all[:args.batch].contiguous()
    rows = []
    for name, make in (("MLP 784-500-150-10", DeepDefenseMLP), ("LeNet (Caffe)", CaffeLeNet)):
        torch.manual_seed(0)
        model = make().eval()
        correctness = check(model, x, y)
        sizes = forward_sizes(model, x, y)
        fns = {"robustkit": lambda: robustkit_step(model, x, y),
               "robustkit batched": lambda: robustkit_step(model, x, y, "batched"),
               "naive": lambda: naive_step(model, x, y),
               "torch.func": lambda: torch_func_step(model, x, y),
               "floor": lambda: floor_step(model, x, y, sizes, SETTINGS["candidates"] - 1)}
        t = harness.timeit(fns, rounds=args.rounds, warmup=0 if args.tiny else 1, clock=args.clock,
                           once=("naive",), progress=True)
        row = {"model": name, "batch": args.batch, "forwards": len(sizes), "check": correctness,
               **t.to_json(("robustkit", "robustkit batched", "naive", "torch.func", "floor"))}
        ratios = t.paired_ratios("robustkit")
        row["speedup"] = {"vs naive": 1 / ratios["naive"], "vs torch.func": 1 / ratios["torch.func"],
                          "floor / robustkit": 1 / ratios["floor"]}
        rows.append(row)
        print(f"{name}: step {t.median()['robustkit'] * 1e3:.0f} ms; {row['speedup']}")
    harness.Result("deep_defense-tiny" if args.tiny else "deep_defense", rows,
                   notes={"settings": SETTINGS, "targets": {"vs naive": 10, "vs torch.func": 1.5,
                                                            "floor / robustkit": 0.9}}).write()


if __name__ == "__main__":
    main()
