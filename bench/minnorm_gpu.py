"""Minimum-norm attacks on a GPU: DeepFool and C&W L2 5x100 vs foolbox on a ResNet-50 at 224 px.

The GPU half of issue 4's benchmark ("On a GPU with a ResNet-50: the same ratios or better"); the CPU half
is bench/minnorm.py. No pretrained weights can be downloaded on the lent machines, so the ResNet-50 has
seeded random weights, and each image's label is the model's own prediction (the attacks start from
correctly classified images, as on MNIST). The images are the 100 real ImageNet images of the ImageNet
sample (``.data/`` or ``../shared/data/``) when present (cycled up to ``--images``), seeded noise otherwise.
The ratios, success and median L2 compare the methods on the same model and images.

Correctness first: each method runs once (its warm-up), and our DeepFool's L2 must equal foolbox's within 1%
on >= 90% of the images (the same algorithm) and every method's adversarials must lie in [0, 1]; a failed
check exits with status 1 before anything is timed. Then each method is timed in rotating rounds
(bench/harness.py) with the device synchronised around each call: median wall seconds of ``--repeats``, and
the paired ratio to foolbox (median over rounds of the two calls' time ratio).

    python bench/minnorm_gpu.py                       # cuda, 64 images, -> bench/results/<gpu name>/minnorm_gpu.json
    python bench/minnorm_gpu.py --device cpu --tiny   # checks the code path on CPU (32 px, 4 images, short runs)

foolbox must be importable. The lent GPU machines have no network: ``tools/fetch_gpu_wheels.sh`` gets its
wheels (and the data) ready to carry, and ``bench/gpu_session.sh minnorm`` installs them there.
"""
from __future__ import annotations

import argparse
import warnings

import torch

import harness
import robustkit as rk
from data import attack_outcome as measure
from data import imagenet_images, random_resnets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="32 px, 4 images, DeepFool 5 steps, C&W 2x10")
    harness.add_arguments(parser, threads=None, clock="wall")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("minnorm_gpu: no CUDA device here; --device cpu --tiny checks the code path on CPU")
    try:
        import foolbox as fb
    except ImportError:
        raise SystemExit("minnorm_gpu: foolbox is the baseline and is not installed (see this script's docstring)")
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    if device.type == "cpu":  # a code-path check: one thread keeps a shared CPU from stalling it
        args.threads = 1
    harness.apply_arguments(args, device)
    if args.tiny:
        args.images, args.image_size, args.repeats = 4, 32, 1
    df_steps, cw_rounds, cw_steps = (5, 2, 10) if args.tiny else (50, 5, 100)

    (model,) = random_resnets(1, device)
    x, _, source = imagenet_images(args.images, args.image_size)
    x = x.to(device)
    with torch.no_grad():
        y = model(x).argmax(1)  # random weights: the model's own prediction is the label to move away from
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)

    def fb_run(attack):
        return lambda x, y: attack(fmodel, x, y, epsilons=None)[1]

    families = {
        "deepfool": ("foolbox.L2DeepFoolAttack", {
            "robustkit.DeepFool": lambda x, y: rk.attacks.DeepFool(model, steps=df_steps)(x, y),
            "foolbox.L2DeepFoolAttack": fb_run(fb.attacks.L2DeepFoolAttack(steps=df_steps, candidates=10,
                                                                           overshoot=0.02))}),
        "cw_l2": (f"foolbox.L2CarliniWagnerAttack ({cw_rounds}x{cw_steps})", {
            f"robustkit.CW.fast ({cw_rounds}x{cw_steps}, lr 0.1)": lambda x, y: rk.attacks.CW.fast(
                model, binary_search_steps=cw_rounds, steps=cw_steps)(x, y),
            f"foolbox.L2CarliniWagnerAttack ({cw_rounds}x{cw_steps})": fb_run(fb.attacks.L2CarliniWagnerAttack(
                binary_search_steps=cw_rounds, steps=cw_steps))}),
    }
    report = {"device": str(device), "images": args.images, "image_size": args.image_size,
              "image_source": source, "model": "robustkit.models.resnet50(), seeded random weights",
              "rounds": args.repeats}
    results = {}
    for family, (baseline, runs) in families.items():
        # correctness first: one call each (the warm-up), checked before any timing
        adv = {name: run(x, y).detach() for name, run in runs.items()}
        outcome = {name: measure(model, x, y, a) for name, a in adv.items()}
        for name, o in outcome.items():
            harness.check(o["in_box"], f"minnorm_gpu: {name} returned images outside [0, 1]")
        if family == "deepfool":
            ours, theirs = adv["robustkit.DeepFool"], adv["foolbox.L2DeepFoolAttack"]
            ratio = (ours - x).flatten(1).norm(dim=1) / (theirs - x).flatten(1).norm(dim=1).clamp_min(1e-12)
            agree = ((ratio - 1).abs() < 1e-2).float().mean().item()
            report["deepfool_l2_within_1pct_of_foolbox"] = harness.check_at_least(
                "fraction of images where our DeepFool's L2 is within 1% of foolbox's", agree, 0.9)
        t = harness.timeit({name: (lambda r: lambda: r(x, y))(run) for name, run in runs.items()},
                           rounds=args.repeats, warmup=0, clock=args.clock, device=device)
        seconds, paired = t.median(), t.paired_ratios(baseline)
        rows = {name: {"seconds": seconds[name], "rounds": t.rounds[name], "img_per_s": args.images / seconds[name],
                       "x_foolbox": paired[name], **outcome[name]} for name in runs}
        ref = rows[baseline]
        for row in rows.values():
            row["l2_over_foolbox"] = row["median_l2"] / ref["median_l2"]
        results[family] = rows

    print(f"\nResNet-50 {args.image_size} px, {args.images} images ({source}), {device}")
    print("| attack | img/s | x foolbox (paired) | success | median L2 | L2 / foolbox |\n|---|---|---|---|---|---|")
    for rows in results.values():
        for name, r in rows.items():
            print(f"| {name} | {r['img_per_s']:.2f} | {r['x_foolbox']:.2f} | {r['success']:.3f} | "
                  f"{r['median_l2']:.3f} | {r['l2_over_foolbox']:.3f} |")
    harness.Result("minnorm_gpu" + ("_tiny" if args.tiny else ""), results, notes=report, device=device).write()


if __name__ == "__main__":
    main()
