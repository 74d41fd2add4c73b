"""Times each fused op against the eager PyTorch composition it replaces (forward + backward for the loss),
on CPU always and on CUDA when present. Checks correctness first; prints median time, speedup and
effective GB/s; writes bench/results/<machine>/ops.json.

    python bench/ops.py                 # CPU (and CUDA if available), full sizes
    python bench/ops.py --quick         # small sizes, for a smoke run (-> ops-quick.json, not tracked)

Fused and eager run in alternating rounds (rotating order); the speedup is the paired ratio, the median
over rounds of eager's time over the fused op's in the same round. Targets: CPU, the CE op >= 3x eager at
K=4, B=256, C=1000 and the step op >= 2x eager at 256x3x224x224; GPU, >= 70% of the device's measured copy
bandwidth for both.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import harness
import robustkit.ops as ops


# ---- ensemble temperature cross-entropy ----------------------------------------------------------------
def eager_ce(z, y, temperature, soft_weight, hard_weight):
    total = 0
    for k in range(z.shape[0]):
        total = total + soft_weight * F.cross_entropy(z[k] / temperature, y, reduction="sum")
        if hard_weight:
            total = total + hard_weight * F.cross_entropy(z[k], y, reduction="sum")
    return total


def timed_pair(fused, eager, device, args) -> dict:
    """Median ms of each and the paired speedup (eager / fused within a round)."""
    t = harness.timeit({"fused": fused, "eager": eager}, rounds=args.repeats, warmup=3, clock=args.clock,
                       device=device)
    median = t.median()
    return dict(fused_ms=median["fused"] * 1e3, eager_ms=median["eager"] * 1e3,
                speedup=t.paired_ratios("eager")["fused"], rounds_ms={k: [v * 1e3 for v in s] for k, s in t.rounds.items()})


def bench_ce(device, shape, temperature, soft_weight, hard_weight, args):
    num_models, batch, num_classes = shape
    z = (torch.randn(shape, device=device) * 3).requires_grad_(True)
    y = torch.randint(0, num_classes, (batch,), device=device)
    hyper = dict(temperature=temperature, soft_weight=soft_weight, hard_weight=hard_weight)

    def fused():
        return torch.autograd.grad(ops.ensemble_temperature_ce(z, y, reduction="sum", **hyper), z)[0]

    def eager():
        return torch.autograd.grad(eager_ce(z, y, temperature, soft_weight, hard_weight), z)[0]

    config = f"K={num_models} B={batch} C={num_classes} T={temperature} hard={hard_weight}"
    check = harness.check_close(f"ensemble_temperature_ce {config} gradient", fused(), eager(), rtol=1e-4, atol=1e-5)
    row = timed_pair(fused, eager, device, args)
    # Minimum traffic of forward + backward: read the logits twice, write the gradient once.
    moved = 3 * z.numel() * z.element_size()
    return dict(op="ensemble_temperature_ce fwd+bwd", config=config, device=device, **row,
                fused_GBps=moved / (row["fused_ms"] / 1e3) / 1e9, check=check)


# ---- sign-momentum step ----------------------------------------------------------------------------------
def eager_step(x_adv, x, grad, momentum, step_size, eps, decay, grad_norm, norm):
    """What torchattacks-style code does per step, out of place."""
    if grad_norm == "l1":
        grad = grad / grad.abs().sum(dim=(1, 2, 3), keepdim=True)
    g = decay * momentum + grad if momentum is not None else grad
    if norm == "linf":
        moved = x_adv + step_size * g.sign()
        delta = torch.clamp(moved - x, min=-eps, max=eps)
    else:
        g_norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = x_adv + step_size * g / g_norm - x
        d_norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = delta * torch.where(d_norm > eps, eps / d_norm, torch.ones_like(d_norm))
    return torch.clamp(x + delta, 0, 1), g


def bench_step(device, shape, label, decay, grad_norm, norm, with_momentum, args):
    x = torch.rand(shape, device=device)
    grad = torch.randn(shape, device=device)
    x_adv = (x + 0.01 * torch.randn(shape, device=device)).clamp(0, 1)
    momentum = torch.zeros(shape, device=device) if with_momentum else None
    eps, step = (8 / 255, 2 / 255) if norm == "linf" else (1.0, 0.2)
    kwargs = dict(step_size=step, eps=eps, decay=decay, grad_norm=grad_norm, norm=norm)

    ref_x, ref_m = eager_step(x_adv, x, grad, momentum, step, eps, decay, grad_norm, norm)
    got_x, got_m = x_adv.clone(), None if momentum is None else momentum.clone()
    ops.sign_momentum_step(got_x, x, grad, got_m, **kwargs)
    check = {"x_adv": harness.check_close(f"sign_momentum_step {label} x_adv", got_x, ref_x, rtol=1e-5, atol=1e-6)}
    if with_momentum:
        check["momentum"] = harness.check_close(f"sign_momentum_step {label} momentum", got_m, ref_m,
                                                rtol=1e-5, atol=1e-9)

    # The fused op updates its own copy in place on every repeat; each call does the same work whatever
    # the iterate, since no pass depends on the values.
    work_x, work_m = x_adv.clone(), None if momentum is None else momentum.clone()

    def fused():
        ops.sign_momentum_step(work_x, x, grad, work_m, **kwargs)

    def eager():
        eager_step(x_adv, x, grad, momentum, step, eps, decay, grad_norm, norm)

    row = timed_pair(fused, eager, device, args)
    tensors = 4 + (2 if with_momentum else 0)  # read x_adv, x, grad (+momentum); write x_adv (+momentum)
    moved = tensors * x.numel() * x.element_size()
    return dict(op=f"sign_momentum_step {label}", config="x".join(map(str, shape)), device=device, **row,
                fused_GBps=moved / (row["fused_ms"] / 1e3) / 1e9, check=check)


def copy_bandwidth(device, numel):
    """Measured device-to-device copy bandwidth (read + write), the roofline for these memory-bound ops
    (``torch.utils.benchmark``'s blocked autorange: it synchronises CUDA and picks the calls per block)."""
    src = torch.empty(numel, device=device)
    dst = torch.empty_like(src)
    seconds = harness.autorange(lambda: dst.copy_(src))
    return 2 * numel * src.element_size() / seconds / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: all available)")
    parser.add_argument("--repeats", type=int, default=25, help="timing rounds (fused and eager once each)")
    harness.add_arguments(parser, threads=None, clock="wall")
    args = parser.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 5)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ce_shape = (4, 32, 1000) if args.quick else (4, 256, 1000)
    step_shape = (8, 3, 64, 64) if args.quick else (256, 3, 224, 224)

    for device in devices:
        harness.apply_arguments(args, device)
        torch.manual_seed(0)
        rows = [
            bench_ce(device, ce_shape, 16.0, 1.0, 1.0, args),  # D-MIFGSM: both terms
            bench_ce(device, ce_shape, 1.0, 1.0, 0.0, args),   # plain cross-entropy
            bench_step(device, step_shape, "MI-FGSM linf", 1.0, "l1", "linf", True, args),
            bench_step(device, step_shape, "PGD linf", 0.0, "none", "linf", False, args),
            bench_step(device, step_shape, "PGD l2", 0.0, "none", "l2", False, args),
        ]
        bandwidth = copy_bandwidth(device, (8 if args.quick else 64) * 2**20)
        for r in rows:
            r["of_copy_bw"] = r["fused_GBps"] / bandwidth
        print(f"\n{device}: measured copy bandwidth {bandwidth:.1f} GB/s, {torch.get_num_threads()} threads")
        harness.print_table(rows, ["op", "config", "fused_ms", "eager_ms", "speedup", "fused_GBps", "of_copy_bw"])
        harness.Result("ops" + ("-quick" if args.quick else ""), rows,
                       notes={"copy_bandwidth_GBps": bandwidth, "rounds": args.repeats, "clock": args.clock,
                              "speedup": "paired: median over rounds of eager / fused in the same round"},
                       device=device).write()


if __name__ == "__main__":
    main()
