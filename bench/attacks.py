"""Gradient attacks vs torchattacks, foolbox and the model-only floor, on a trained MNIST LeNet.

Checks outputs first (where the algorithms coincide; a mismatch exits with status 1), then times each
method in rotating rounds (bench/harness.py): the ratios are paired, the median over rounds of the two
calls' time ratio in the same round. The floor is ``steps x`` the time of one forward pass plus the input
gradient of the same model.

    python bench/attacks.py [--images 256] [--repeats 5] [--threads 1] [--clock cpu|wall]
    python bench/attacks.py --tiny           # 16 images, 1 round: checks the script (-> attacks-quick.json)
    python bench/attacks.py --gpu            # GPU: ResNet-50 224 px batch 256, fp32, amp, ensemble of 4,
                                             # streams on vs off -> bench/results/<gpu name>/attacks_gpu.json
    python bench/attacks.py --gpu --device cpu --tiny   # checks the GPU code path on CPU

Writes bench/results/<machine label>/attacks.json (bench/harness.py's machine_label: cpu-<cores>core or the
GPU's name; ``--label`` or $ROBUSTKIT_BENCH_LABEL overrides it).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform

import torch
import torch.nn.functional as F

import harness
import robustkit as rk
from data import correctly_classified, mnist_lenet, random_resnets
from harness import compare, floor_step

#: where the algorithms coincide (float64 model and images), ours and torchattacks' must agree to rounding
COINCIDE_TOL = 1e-12


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


def float64_agreement(name: str, make_ours, make_theirs, model, x, y) -> dict:
    """Runs both implementations on a float64 copy of the model and images, where the algorithms coincide:
    torchattacks' float32 cross-entropy gradient rounds p_y - 1, ours is exact to float64, so float32 runs
    differ in sign on some images; in float64 neither rounds there. Exits if they differ beyond rounding."""
    model64, x64 = copy.deepcopy(model).double(), x.double()
    adv_ours, adv_theirs = make_ours(model64)(x64, y), make_theirs(model64)(x64, y)
    result = compare(adv_ours, adv_theirs, tol=COINCIDE_TOL)
    delta_ours, delta_theirs = (adv_ours - x64).flatten(1), (adv_theirs - x64).flatten(1)
    # the sign pattern of the perturbation, ignoring rounding-level deltas
    result["frac_delta_sign_equal"] = (_sign(delta_ours) == _sign(delta_theirs)).double().mean().item()
    if result["max_abs_diff"] > COINCIDE_TOL:
        harness.fail(f"{name}: robustkit and torchattacks differ by {result['max_abs_diff']:.3g} in float64, "
                     f"where the algorithms coincide (tolerance {COINCIDE_TOL:g})")
    return result


def _sign(delta: torch.Tensor) -> torch.Tensor:
    return torch.where(delta.abs() <= COINCIDE_TOL, torch.zeros_like(delta), delta.sign())


def recorded_iterates(atk, model, x, y) -> list:
    """The inputs the attack's model forwards actually see, x_0 ... x_{steps-1} (a forward pre-hook)."""
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        atk(x, y)
    finally:
        hook.remove()
    return seen


def floors(model, x, iterates: list) -> dict:
    """The model-only floor, steps x (one forward + the input gradient), two ways. "floor": every step on the
    clean images x (the issue's definition). "floor_iterates": each step on the image the attack's step
    really feeds the model. On CPU the second is the fair one: the LeNet's cost depends on its input.
    Profiled at 256 images: max-pool's forward takes 7.5 ms on the clean digits and 9.7 ms on PGD iterates,
    about 7% of a step; the convolutions cost the same on both. Max-pool's comparisons branch: on the same
    [256, 6, 28, 28] shape it takes 3.0 ms over constant values and 7.4 ms over random ones, and a clean
    digit's background is constant where an iterate's is noise. The clean-x floor would charge any attack that
    7% as overhead. In paired runs torchattacks reaches 0.91 of the clean floor and 0.94-0.98 of
    ``floor_iterates``: the issue's "about 0.97" is the second."""
    steps = len(iterates)
    return {"floor": lambda: [floor_step(model, x) for _ in range(steps)],
            "floor_iterates": lambda: [floor_step(model, xi) for xi in iterates]}


def timed(methods: dict, args, repeats: int, references=()) -> dict:
    """The row's timing fields: medians on the chosen clock and on the wall, per-round samples and the
    paired ratios against ``references`` (rotating order, one warm-up call each)."""
    t = harness.timeit(methods, rounds=repeats, warmup=1, clock=args.clock)
    return t.to_json(references)


def bench_fixed_step(model, x, y, args) -> list:
    import foolbox as fb
    import torchattacks

    rows = []
    eps, alpha, steps = 0.3, 0.01, 40
    ours = rk.attacks.PGD(model, eps=eps, step_size=alpha, steps=steps, random_start=False)
    # the same attack on PyTorch's convolution backward everywhere: the floor's kernels, so its ratio to the
    # floor is robustkit's own overhead (the default routes the first conv's input gradient to robustkit's kernel)
    ours_torch = rk.attacks.PGD(model, eps=eps, step_size=alpha, steps=steps, random_start=False,
                                conv_input_grad="torch")
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
             "torchattacks vs float64 reference": compare(adv_theirs, adv_64),
             "float64 model and images: robustkit vs torchattacks.PGD": float64_agreement(
                 "PGD", lambda m: rk.attacks.PGD(m, eps=eps, step_size=alpha, steps=steps, random_start=False),
                 lambda m: torchattacks.PGD(m, eps=eps, alpha=alpha, steps=steps, random_start=False), model, x, y)}
    t = timed({"robustkit.PGD": lambda: ours(x, y), "robustkit.PGD, torch conv": lambda: ours_torch(x, y),
               "torchattacks.PGD": lambda: theirs(x, y),
               "foolbox.LinfPGD": fb_run, **floors(model, x, recorded_iterates(ours, model, x, y))},
              args, args.repeats, REFERENCES)
    rows.append({"attack": f"PGD linf eps={eps} alpha={alpha} steps={steps} random_start=False", **t,
                 "check": check})

    steps_mi = 10
    ours_mi = rk.attacks.MIFGSM(model, eps=eps, step_size=eps / steps_mi, steps=steps_mi, decay=1.0)
    ours_mi_torch = rk.attacks.MIFGSM(model, eps=eps, step_size=eps / steps_mi, steps=steps_mi, decay=1.0,
                                      conv_input_grad="torch")
    theirs_mi = torchattacks.MIFGSM(model, eps=eps, alpha=eps / steps_mi, steps=steps_mi, decay=1.0)
    adv_ours, adv_theirs = ours_mi(x, y), theirs_mi(x, y)
    adv_64 = float64_reference(model, x, y, eps=eps, alpha=eps / steps_mi, steps=steps_mi, decay=1.0)
    check_mi = {"robustkit vs torchattacks.MIFGSM": compare(adv_ours, adv_theirs),
                "robustkit vs float64 reference": compare(adv_ours, adv_64),
                "torchattacks vs float64 reference": compare(adv_theirs, adv_64),
                "float64 model and images: robustkit vs torchattacks.MIFGSM": float64_agreement(
                    "MI-FGSM",
                    lambda m: rk.attacks.MIFGSM(m, eps=eps, step_size=eps / steps_mi, steps=steps_mi, decay=1.0),
                    lambda m: torchattacks.MIFGSM(m, eps=eps, alpha=eps / steps_mi, steps=steps_mi, decay=1.0),
                    model, x, y)}
    t_mi = timed({"robustkit.MIFGSM": lambda: ours_mi(x, y),
                  "robustkit.MIFGSM, torch conv": lambda: ours_mi_torch(x, y),
                  "torchattacks.MIFGSM": lambda: theirs_mi(x, y),
                  **floors(model, x, recorded_iterates(ours_mi, model, x, y))},
                 args, 3 * args.repeats, REFERENCES)  # 10 steps take a quarter of PGD's 40: more rounds
    rows.append({"attack": f"MI-FGSM eps={eps} alpha={eps / steps_mi:.3g} steps={steps_mi} decay=1", **t_mi,
                 "check": check_mi})
    return rows


def bench_overhead(x, y, args) -> dict:
    """What each attack adds per step outside the model: the same attacks around a linear model (784 -> 10)
    whose forward and backward are nearly free, minus that model's floor. Unlike the ratios to the LeNet's
    floor, this is not blurred by the LeNet's data-dependent cost or the machine's page-fault churn."""
    import torchattacks

    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 10)).eval()
    steps = 40
    ours = rk.attacks.PGD(linear, eps=0.3, step_size=0.01, steps=steps, random_start=False)
    ours_mi = rk.attacks.MIFGSM(linear, eps=0.3, step_size=0.01, steps=steps, decay=1.0)
    theirs = torchattacks.PGD(linear, eps=0.3, alpha=0.01, steps=steps, random_start=False)
    theirs_mi = torchattacks.MIFGSM(linear, eps=0.3, alpha=0.01, steps=steps, decay=1.0)
    t = timed({"robustkit.PGD": lambda: ours(x, y), "robustkit.MIFGSM": lambda: ours_mi(x, y),
               "torchattacks.PGD": lambda: theirs(x, y), "torchattacks.MIFGSM": lambda: theirs_mi(x, y),
               "floor": lambda: [floor_step(linear, x) for _ in range(steps)]}, args, args.repeats, REFERENCES)
    seconds = t["seconds"]
    overhead = {name: (sec - seconds["floor"]) / steps * 1e6 for name, sec in seconds.items() if name != "floor"}
    return {"attack": f"linear model, {steps} steps: per-step overhead outside the model", **t,
            "overhead_us_per_step": overhead}


def bench_early_stop(model, x, y, args, eps: float) -> dict:
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
    t = timed({"robustkit.PGD(early_stop)": lambda: ours.run(x, y),
               "torchattacks.PGD": lambda: theirs(x, y)}, args, args.repeats, REFERENCES)
    return {"attack": f"PGD linf eps={eps} alpha={alpha} steps={steps}, early stop", **t,
            "robust_accuracy": robust, "mean_steps_used": res.steps.float().mean().item()}


# ---- GPU mode: ResNet-50 at 224 px, batch 256 ---------------------------------------------------------------
def bench_gpu(args) -> dict:
    """fp32 PGD vs the floor; amp=True vs torchattacks fp32; an ensemble of K vs the sum of the K floors,
    with the member forwards on separate streams and without. ``--tiny`` shrinks everything so the code
    path can be checked on CPU."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size, batch, steps, k = args.image_size, args.gpu_batch, args.gpu_steps, args.ensemble
    eps, alpha = 4 / 255, 1 / 255
    models = random_resnets(k, device)  # random weights (the GPU machines reach no weight files): timing only
    model = models[0]
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    try:
        import torchattacks
    except ImportError:  # optional on GPU machines: the rows against it are then skipped
        torchattacks = None
    def pgd(m, **kw):
        return rk.attacks.PGD(m, eps=eps, step_size=alpha, steps=steps, random_start=False, **kw)

    one_floor = lambda m: (lambda: [floor_step(m, x) for _ in range(steps)])  # noqa: E731
    rows = []

    single = {"robustkit.PGD fp32": (lambda a: lambda: a(x, y))(pgd(model)),
              "robustkit.PGD amp": (lambda a: lambda: a(x, y))(pgd(model, amp=True)),
              "floor": one_floor(model)}
    if torchattacks is not None:
        theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        single["torchattacks.PGD fp32"] = lambda: theirs(x, y)
    timing = harness.timeit(single, rounds=args.repeats, clock="wall", device=device).to_json(
        ("floor", "torchattacks.PGD fp32"))
    t = timing["seconds"]
    row = {"attack": f"ResNet-50 {size}px batch {batch}: PGD linf eps=4/255 alpha=1/255 steps={steps}",
           **timing, "images": batch, "fp32_vs_floor": t["floor"] / t["robustkit.PGD fp32"]}
    if "torchattacks.PGD fp32" in t:
        row["amp_vs_torchattacks_fp32"] = t["torchattacks.PGD fp32"] / t["robustkit.PGD amp"]
        row["fp32_vs_torchattacks_fp32"] = t["torchattacks.PGD fp32"] / t["robustkit.PGD fp32"]
    rows.append(row)
    print(json.dumps(row, indent=2))

    # The ensemble keeps K forward graphs alive until the fused loss; halve the batch if K of them do not fit.
    ens_batch = batch
    while True:
        xe, ye = x[:ens_batch], y[:ens_batch]
        ens = {f"robustkit.PGD ensemble of {k}, streams={s}":
               (lambda a: lambda: a(xe, ye))(pgd(None, models=models, streams=s)) for s in (True, False)}
        for i, m in enumerate(models):
            ens[f"floor model {i}"] = (lambda mm: lambda: [floor_step(mm, xe) for _ in range(steps)])(m)
        try:
            timing = harness.timeit(ens, rounds=args.repeats, clock="wall", device=device).to_json()
            t = timing["seconds"]
            break
        except torch.cuda.OutOfMemoryError:
            if ens_batch == 1:
                raise
            ens_batch //= 2
            torch.cuda.empty_cache()
            print(f"ensemble of {k} at batch {ens_batch * 2} ran out of GPU memory; retrying at {ens_batch}")
    floor_sum = sum(v for n, v in t.items() if n.startswith("floor model"))
    on, off = t[f"robustkit.PGD ensemble of {k}, streams=True"], t[f"robustkit.PGD ensemble of {k}, streams=False"]
    row = {"attack": f"ResNet-50 x {k} {size}px batch {ens_batch}: PGD linf eps=4/255 steps={steps}, fusion=loss",
           **timing, "images": ens_batch, "sum_of_floors": floor_sum, "streams_on_vs_sum_of_floors": floor_sum / on,
           "streams_off_vs_sum_of_floors": floor_sum / off, "streams_on_vs_off": off / on}
    rows.append(row)
    print(json.dumps(row, indent=2))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": device_name, "rows": rows}


#: the references a row's paired ratios are taken against, where the row has them
REFERENCES = ("torchattacks.PGD", "torchattacks.MIFGSM", "floor", "floor_iterates")


def torchattacks_name(row: dict):
    return next((k for k in row["seconds"] if k.startswith("torchattacks")), None)


def print_table(rows: list, images: int) -> None:
    """img/s from the median seconds; every ratio is paired (:func:`harness.paired_ratios`): the median over
    rounds of the reference's time over the method's time in the same round."""
    print(f"\n{'attack':58s} {'method':28s} {'img/s':>9s} {'vs torchattacks':>16s} {'vs floor':>9s} "
          f"{'vs floor_iterates':>18s}")
    for row in rows:
        t = row["seconds"]
        base = torchattacks_name(row)
        ratios = {ref[len("vs "):]: r for ref, r in row["paired_ratios"].items()}
        for name, sec in t.items():
            cells = [f"{ratios[ref][name]:.3f}" + ("x" if ref == base else "") if ref in ratios else ""
                     for ref in (base, "floor", "floor_iterates")]
            print(f"{row['attack']:58s} {name:28s} {images / sec:9.0f} {cells[0]:>16s} {cells[1]:>9s} {cells[2]:>18s}")
        for key in ("check", "robust_accuracy", "overhead_us_per_step"):
            if key in row:
                print(f"    {key}: {json.dumps(row[key])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds (MI-FGSM's table runs 3x as many)")
    harness.add_arguments(parser, threads=1, clock="cpu")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc mallopt: no page-fault churn from returning freed blocks "
                             "(see harness.keep_freed_memory)")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU benchmark instead (ResNet-50, 224 px, batch 256; see bench_gpu)")
    parser.add_argument("--device", default="cuda", help="--gpu: the device (cpu with --tiny checks the code)")
    parser.add_argument("--tiny", action="store_true",
                        help="checks the script: 16 images and 1 round; with --gpu 32 px, batch 4, 2 steps, 2 models")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--gpu-steps", type=int, default=10)
    parser.add_argument("--ensemble", type=int, default=4)
    args = parser.parse_args()
    if args.gpu:
        return main_gpu(args)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu sums the CPU time of all threads; use --threads 1 or --clock wall")
    harness.apply_arguments(args)
    if args.tiny:
        args.images, args.repeats = min(args.images, 16), 1
    if args.keep_freed_memory and not harness.keep_freed_memory():
        raise SystemExit("--keep-freed-memory needs glibc (mallopt)")
    harness.quiet_peer_warnings()
    model = mnist_lenet()
    x, y = correctly_classified(model, args.images)
    rows = bench_fixed_step(model, x, y, args)
    rows.append(bench_overhead(x, y, args))
    print_table(rows, x.shape[0])
    for eps in (0.3, 0.1):
        rows.append(bench_early_stop(model, x, y, args, eps))
        print_table(rows[-1:], x.shape[0])
    harness.Result("attacks" + ("-quick" if args.tiny else ""), rows, notes={
        "images": x.shape[0], "threads": args.threads, "clock": args.clock, "rounds": args.repeats,
        "keep_freed_memory": args.keep_freed_memory, "model": "trained_mnist_model('lenet')",
        "ratios": "paired: median over rounds of t_reference / t_method in the same round"}).write()


def main_gpu(args) -> None:
    if args.tiny:
        args.image_size, args.gpu_batch, args.gpu_steps, args.ensemble = 32, 4, 2, 2
        args.repeats = min(args.repeats, 2)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (or --device cpu --tiny to check the code path)")
    args.clock = "wall"  # the GPU's time is not this process's CPU time
    if not args.device.startswith("cuda"):  # a code-path check: one thread keeps a shared CPU from stalling it
        args.threads = 1
    else:
        args.threads = None  # torch's default for the host side
    harness.apply_arguments(args, args.device)
    result = bench_gpu(args)
    harness.Result("attacks_gpu" + ("_tiny" if args.tiny else ""), result.pop("rows"), notes=result,
                   device=args.device).write()


if __name__ == "__main__":
    main()
