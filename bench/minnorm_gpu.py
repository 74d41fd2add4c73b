"""Minimum-norm attacks on a GPU: DeepFool and C&W L2 5x100 vs foolbox on a ResNet-50 at 224 px.

The GPU half of issue 4's benchmark ("On a GPU with a ResNet-50: the same ratios or better"); the CPU half
is bench/minnorm.py. No pretrained weights can be downloaded on the lent machines, so the ResNet-50 has
seeded random weights, and each image's label is the model's own prediction (the attacks start from
correctly classified images, as on MNIST). The images are the 100 real ImageNet images of the ImageNet
sample (``.data/`` or ``../shared/data/``) when present (cycled up to ``--images``), seeded noise otherwise.
The ratios, success and median L2 compare the methods on the same model and images.

Correctness first: our DeepFool's L2 must equal foolbox's within 1% on >= 90% of the images (the same
algorithm), and every method's adversarials must lie in [0, 1]. Then each method is timed, round-robin, with
the device synchronised around each call: median wall seconds of ``--repeats``.

    python bench/minnorm_gpu.py                       # cuda, 64 images, -> bench/results/<gpu name>/minnorm_gpu.json
    python bench/minnorm_gpu.py --device cpu --tiny   # checks the code path on CPU (32 px, 4 images, short runs)

foolbox must be importable. The lent GPU machines have no network: ``tools/fetch_gpu_wheels.sh`` gets its
wheels (and the data) ready to carry, and ``bench/gpu_session.sh minnorm`` installs them there.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
import warnings

import torch

import robustkit as rk
from robustkit.models import resnet50

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import environment, machine_label  # noqa: E402
from minnorm import measure  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
REPO = pathlib.Path(__file__).resolve().parents[1]
# the carried copy (tools/fetch_gpu_wheels.sh) on the GPU machines, the shared data beside the checkout here
SAMPLE = next((p for p in (REPO / ".data" / "imagenet-sample", REPO.parent / "shared" / "data" / "imagenet-sample")
               if p.is_dir()), REPO / ".data" / "imagenet-sample")


def images(count: int, size: int) -> tuple:
    """``count`` images in [0, 1] at ``size`` px: the ImageNet sample, cycled, or seeded noise."""
    if SAMPLE.is_dir():
        from robustkit.datasets import imagenet_folder
        data = imagenet_folder(SAMPLE / "val", classes_file=SAMPLE / "classes.txt", crop_size=size,
                               resize_size=max(size, size * 8 // 7))
        return torch.stack([data[i % len(data)][0] for i in range(count)]), "imagenet-sample"
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, size, size, generator=generator), "seeded noise"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(runs: dict, x, y, repeats: int, device: torch.device) -> dict:
    """``{name: (median wall seconds, adversarials)}``, one warm-up call each on the whole batch."""
    adv = {name: run(x, y) for name, run in runs.items()}
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            adv[name] = run(x, y)
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: (statistics.median(s), adv[name]) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="32 px, 4 images, DeepFool 5 steps, C&W 2x10")
    parser.add_argument("--label", default=None, help="folder under bench/results/ (default: the device's name)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("minnorm_gpu: no CUDA device here; --device cpu --tiny checks the code path on CPU")
    try:
        import foolbox as fb
    except ImportError:
        raise SystemExit("minnorm_gpu: foolbox is the baseline and is not installed (see this script's docstring)")
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    if args.tiny:
        args.images, args.image_size, args.repeats = 4, 32, 1
    df_steps, cw_rounds, cw_steps = (5, 2, 10) if args.tiny else (50, 5, 100)

    torch.manual_seed(0)
    model = resnet50().eval().to(device)
    x, source = images(args.images, args.image_size)
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
    report = {**environment(), "device": str(device), "images": args.images, "image_size": args.image_size,
              "image_source": source, "model": "robustkit.models.resnet50(), seeded random weights",
              "results": {}}
    for family, (baseline, runs) in families.items():
        timed = time_round_robin(runs, x, y, args.repeats, device)
        rows = {}
        for name, (seconds, adv) in timed.items():
            rows[name] = {"seconds": seconds, "img_per_s": args.images / seconds,
                          **measure(model, x, y, adv.detach())}
            if not rows[name]["in_box"]:
                raise SystemExit(f"minnorm_gpu: {name} returned images outside [0, 1]")
        if family == "deepfool":
            ours, theirs = timed["robustkit.DeepFool"][1], timed["foolbox.L2DeepFoolAttack"][1]
            ratio = (ours - x).flatten(1).norm(dim=1) / (theirs - x).flatten(1).norm(dim=1).clamp_min(1e-12)
            agree = ((ratio - 1).abs() < 1e-2).float().mean().item()
            report["deepfool_l2_within_1pct_of_foolbox"] = agree
            if agree < 0.9:
                raise SystemExit(f"minnorm_gpu: our DeepFool's L2 agrees with foolbox's on only {agree:.0%}")
        ref = rows[baseline]
        for row in rows.values():
            row["x_foolbox"] = row["img_per_s"] / ref["img_per_s"]
            row["l2_over_foolbox"] = row["median_l2"] / ref["median_l2"]
        report["results"][family] = rows

    print(f"\nResNet-50 {args.image_size} px, {args.images} images ({source}), {device}")
    print("| attack | img/s | x foolbox | success | median L2 | L2 / foolbox |\n|---|---|---|---|---|---|")
    for rows in report["results"].values():
        for name, r in rows.items():
            print(f"| {name} | {r['img_per_s']:.2f} | {r['x_foolbox']:.2f} | {r['success']:.3f} | "
                  f"{r['median_l2']:.3f} | {r['l2_over_foolbox']:.3f} |")
    label = args.label or ("cpu-tiny" if args.tiny else machine_label(device.type))
    out = RESULTS / label / ("minnorm_gpu_tiny.json" if args.tiny else "minnorm_gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
