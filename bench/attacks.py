"""Gradient attacks vs torchattacks, foolbox and the model-only floor, on a trained MNIST LeNet.

Checks outputs first (where the algorithms coincide), then times each method with warm-up and the
median of interleaved repeats (interleaving spreads the noise of a shared machine over all methods).
The floor is ``steps x`` the time of one forward pass plus the input gradient of the same model.

    python bench/attacks.py [--images 256] [--repeats 5] [--threads 1]

Writes bench/results/<label>/attacks.json (default label cpu-2core).
"""
from __future__ import annotations

import argparse
import copy
import json
import pathlib
import platform
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import robustkit as rk
from robustkit.datasets import mnist
from robustkit.models.train import trained_mnist_model

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def correctly_classified(model, count: int):
    test = mnist("test")
    x, y = test[0:4 * count]
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep][:count].contiguous(), y[keep][:count].contiguous()


def floor_step(model, x):
    """One forward pass and the input gradient: what any gradient attack must pay per step."""
    x_var = x.detach().requires_grad_(True)
    out = model(x_var)
    (grad,) = torch.autograd.grad(out, x_var, grad_outputs=torch.ones_like(out))
    return grad


#: which clock the ratios use: "cpu" (this process's CPU time) or "wall"; set from --clock
CLOCK = {"name": "cpu"}


def time_interleaved(methods: dict, repeats: int, warmup: int = 1) -> dict:
    """Median seconds per method. With one intra-op thread, process CPU time measures the work itself and
    ignores the time the process waits for a core on a shared machine; wall time is kept alongside."""
    for fn in methods.values():
        for _ in range(warmup):
            fn()
    cpu = {name: [] for name in methods}
    wall = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    WALL_SECONDS.append({name: statistics.median(s) for name, s in wall.items()})
    chosen = cpu if CLOCK["name"] == "cpu" else wall
    return {name: statistics.median(s) for name, s in chosen.items()}


WALL_SECONDS: list = []


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    diff = (a - b).abs()
    same_sample = (diff.flatten(1) <= 1e-6).all(1)
    return {"max_abs_diff": diff.max().item(), "frac_elements_over_1e-6": (diff > 1e-6).float().mean().item(),
            "frac_samples_equal": same_sample.float().mean().item()}


def float64_reference(model, x, y, *, eps: float, alpha: float, steps: int, decay=None) -> torch.Tensor:
    """I-FGSM / MI-FGSM in float64 (model and images): the trajectory float32 implementations approximate.

    For confidently classified images the float32 cross-entropy gradient at the true class, p_y - 1, is
    dominated by rounding, so float32 implementations (ours, torchattacks, foolbox) can take different
    signs there; float64 tells which trajectory is the exact one."""
    model64 = copy.deepcopy(model).double()
    x64, x_i = x.double(), x.double().clone()
    g = torch.zeros_like(x64)
    for _ in range(steps):
        x_var = x_i.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model64(x_var), y, reduction="sum"), x_var)
        if decay is not None:
            g = decay * g + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            grad = g
        x_i = torch.min(torch.max(x_i + alpha * grad.sign(), x64 - eps), x64 + eps).clamp(0, 1)
    return x_i.float()


def bench_fixed_step(model, x, y, repeats: int) -> list:
    import foolbox as fb
    import torchattacks

    rows = []
    eps, alpha, steps = 0.3, 0.01, 40
    ours = rk.attacks.PGD(model, eps=eps, step_size=alpha, steps=steps, random_start=False)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    fb_attack = fb.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=False)
    fb_run = lambda: fb_attack(fmodel, x, y, epsilons=eps)[1]  # noqa: E731  (the clipped advs)
    adv_ours, adv_theirs, adv_fb = ours(x, y), theirs(x, y), fb_run()
    adv_64 = float64_reference(model, x, y, eps=eps, alpha=alpha, steps=steps)
    check = {"robustkit vs torchattacks.PGD": compare(adv_ours, adv_theirs),
             "robustkit vs foolbox.LinfPGD": compare(adv_ours, adv_fb),
             "torchattacks vs foolbox": compare(adv_theirs, adv_fb),
             "robustkit vs float64 reference": compare(adv_ours, adv_64),
             "torchattacks vs float64 reference": compare(adv_theirs, adv_64)}
    floor = lambda: [floor_step(model, x) for _ in range(steps)]  # noqa: E731
    t = time_interleaved({"robustkit.PGD": lambda: ours(x, y), "torchattacks.PGD": lambda: theirs(x, y),
                          "foolbox.LinfPGD": fb_run, "floor": floor}, repeats)
    rows.append({"attack": f"PGD linf eps={eps} alpha={alpha} steps={steps} random_start=False", "seconds": t,
                 "check": check})

    steps_mi = 10
    ours_mi = rk.attacks.MIFGSM(model, eps=eps, step_size=eps / steps_mi, steps=steps_mi, decay=1.0)
    theirs_mi = torchattacks.MIFGSM(model, eps=eps, alpha=eps / steps_mi, steps=steps_mi, decay=1.0)
    adv_ours, adv_theirs = ours_mi(x, y), theirs_mi(x, y)
    adv_64 = float64_reference(model, x, y, eps=eps, alpha=eps / steps_mi, steps=steps_mi, decay=1.0)
    check_mi = {"robustkit vs torchattacks.MIFGSM": compare(adv_ours, adv_theirs),
                "robustkit vs float64 reference": compare(adv_ours, adv_64),
                "torchattacks vs float64 reference": compare(adv_theirs, adv_64)}
    floor_mi = lambda: [floor_step(model, x) for _ in range(steps_mi)]  # noqa: E731
    t_mi = time_interleaved({"robustkit.MIFGSM": lambda: ours_mi(x, y), "torchattacks.MIFGSM": lambda: theirs_mi(x, y),
                             "floor": floor_mi}, repeats)
    rows.append({"attack": f"MI-FGSM eps={eps} alpha={eps / steps_mi:.3g} steps={steps_mi} decay=1", "seconds": t_mi,
                 "check": check_mi})
    return rows


def bench_early_stop(model, x, y, repeats: int, eps: float) -> dict:
    import torchattacks

    alpha, steps = 0.01, 40
    ours = rk.attacks.PGD(model, eps=eps, step_size=alpha, steps=steps, random_start=False, early_stop=True)
    full = rk.attacks.PGD(model, eps=eps, step_size=alpha, steps=steps, random_start=False)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    res = ours.run(x, y)
    adv_theirs = theirs(x, y)
    with torch.no_grad():
        robust_theirs = (model(adv_theirs).argmax(1) == y).float().mean().item()
    robust = {"robustkit.PGD(early_stop)": 1 - res.success.float().mean().item(),
              "robustkit.PGD(fixed)": 1 - full.run(x, y).success.float().mean().item(),
              "torchattacks.PGD": robust_theirs}
    t = time_interleaved({"robustkit.PGD(early_stop)": lambda: ours.run(x, y),
                          "torchattacks.PGD": lambda: theirs(x, y)}, repeats)
    return {"attack": f"PGD linf eps={eps} alpha={alpha} steps={steps}, early stop", "seconds": t,
            "robust_accuracy": robust, "mean_steps_used": res.steps.float().mean().item()}


def print_table(rows: list, images: int) -> None:
    print(f"\n{'attack':58s} {'method':28s} {'img/s':>9s} {'vs torchattacks':>16s} {'vs floor':>9s}")
    for row in rows:
        t = row["seconds"]
        base = next((v for k, v in t.items() if k.startswith("torchattacks")), None)
        for name, sec in t.items():
            vs_base = f"{base / sec:.3f}x" if base else ""
            vs_floor = f"{t['floor'] / sec:.3f}" if "floor" in t else ""
            print(f"{row['attack']:58s} {name:28s} {images / sec:9.0f} {vs_base:>16s} {vs_floor:>9s}")
        for key in ("check", "robust_accuracy"):
            if key in row:
                print(f"    {key}: {json.dumps(row[key])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (1: on a shared 2-core machine, 2 threads mostly measure contention)")
    parser.add_argument("--label", default="cpu-2core")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: process CPU time (needs --threads 1 to mean work done), wall: elapsed time")
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu sums the CPU time of all threads; use --threads 1 or --clock wall")
    CLOCK["name"] = args.clock
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="foolbox")
    model = trained_mnist_model("lenet", progress=False)
    for p in model.parameters():  # as users load models: parameters keep requires_grad=True
        p.requires_grad_(True)
    x, y = correctly_classified(model, args.images)
    rows = bench_fixed_step(model, x, y, args.repeats)
    print_table(rows, x.shape[0])
    for eps in (0.3, 0.1):
        rows.append(bench_early_stop(model, x, y, args.repeats, eps))
        print_table(rows[-1:], x.shape[0])
    out = RESULTS / args.label / "attacks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "python " + " ".join(sys.argv), "images": x.shape[0], "threads": args.threads,
        "clock": args.clock, "wall_seconds_per_table": WALL_SECONDS,
        "model": "trained_mnist_model('lenet')", "torch": torch.__version__, "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
