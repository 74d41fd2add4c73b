"""Minimum-norm attacks (DeepFool, C&W L2) vs foolbox, torchattacks and ART on a trained MNIST LeNet.

Every method attacks the same correctly classified MNIST test images; success and L2 are measured the
same way for all (prediction of the returned image != label; ||adv - x||_2 over the successes).
Correctness first: our DeepFool must agree image by image with foolbox's (the same algorithm), and
CW.fast must break >= 99 % of the images inside the box, before anything is timed. Each method is
warmed up on 8 images, then timed over the whole set (median of ``--repeats`` runs, taken round-robin
over the methods, for ours and foolbox; the peers that are >10x slower run once, on ``--slow-images``).
img/s is per second of process CPU time (robust to the shared machine's load with ``--threads 1``); the
wall-clock rate is kept next to it. robustkit's attacks run with their default ``conv_input_grad="robustkit"``
(the LeNet's first-conv input gradient on robustkit's kernel); the ``conv_input_grad=torch`` row runs PyTorch's
kernels throughout, as the peers do.

    python bench/minnorm.py [--images 256] [--slow-images 64] [--repeats 3] [--threads 2]

Writes bench/results/<label>/<output> (default cpu-2core/minnorm.json).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

import robustkit as rk
from robustkit.datasets import mnist
from robustkit.zoo import trained_mnist_model

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def correctly_classified(model, count: int):
    x, y = mnist("test")[0:4 * count]
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep][:count].contiguous(), y[keep][:count].contiguous()


def measure(model, x, y, adv) -> dict:
    adv = torch.as_tensor(np.asarray(adv) if not isinstance(adv, torch.Tensor) else adv).float()
    with torch.no_grad():
        success = model(adv).argmax(1) != y
    l2 = (adv - x).flatten(1).norm(dim=1)
    in_box = bool(adv.min() >= 0 and adv.max() <= 1)
    return {"success": success.float().mean().item(),
            "median_l2": l2[success].median().item() if success.any() else float("nan"), "in_box": in_box}


def timed_family(runs: dict, x, y, slow_images: int, repeats: int) -> dict:
    """``{name: (median wall s, median process-CPU s, adv, images)}``. With one thread, CPU time is robust to
    the shared machine's load; the repeats go round-robin over the methods, so that a change of load
    between repeats hits ours and the peers alike. Slow methods run once, on ``slow_images`` images."""
    data = {name: (x[:slow_images], y[:slow_images]) if slow else (x, y) for name, (_, slow) in runs.items()}
    for name, (run, _) in runs.items():
        run(data[name][0][:8], data[name][1][:8])  # warm-up
    wall, cpu, adv = {name: [] for name in runs}, {name: [] for name in runs}, {}
    for repeat in range(repeats):
        for name, (run, slow) in runs.items():
            if slow and repeat > 0:
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            adv[name] = run(*data[name])
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]), adv[name], data[name][0].shape[0])
            for name in runs}


def methods(model):
    import foolbox as fb
    import torchattacks
    from art.attacks.evasion import CarliniL2Method, DeepFool as ArtDeepFool
    from art.estimators.classification import PyTorchClassifier

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    art_clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                                clip_values=(0.0, 1.0))

    def fb_run(attack):
        return lambda x, y: attack(fmodel, x, y, epsilons=None)[1]

    def art_run(attack):
        return lambda x, y: torch.from_numpy(attack.generate(x.numpy()))

    deepfool = {
        "robustkit.DeepFool": (lambda x, y: rk.attacks.DeepFool(model)(x, y), False),
        "robustkit.DeepFool (conv_input_grad=torch)": (
            lambda x, y: rk.attacks.DeepFool(model, conv_input_grad="torch")(x, y), False),
        "robustkit.DeepFool (jacobian=batched, vmap)": (
            lambda x, y: rk.attacks.DeepFool(model, jacobian="batched")(x, y), False),
        "foolbox.L2DeepFoolAttack": (fb_run(fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)),
                                     False),
        "torchattacks.DeepFool": (lambda x, y: torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y), True),
        "art.DeepFool": (art_run(ArtDeepFool(art_clf, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=256,
                                             verbose=False)), True),
    }
    cw = {
        # CW.fast: lr 0.1, warm-started rounds, abort when the loss fell < 0.2 % over 5 iterations.
        "robustkit.CW.fast (5x100, lr 0.1)": (lambda x, y: rk.attacks.CW.fast(model)(x, y), False),
        # The same with Carlini's abort rule and cold restarts: what CW.fast trades for its speed.
        "robustkit.CW.fast, Carlini's abort, cold rounds": (lambda x, y: rk.attacks.CW.fast(
            model, abort_checks=10, abort_tol=1e-4, warm_start=False)(x, y), False),
        "robustkit.CW (5x100, lr 0.01)": (lambda x, y: rk.attacks.CW(model, binary_search_steps=5, steps=100,
                                                                      initial_const=1e-2)(x, y), True),
        "foolbox.L2CarliniWagnerAttack (5x100)": (fb_run(fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=5, steps=100)), False),
        "foolbox.L2CarliniWagnerAttack (5x100, stepsize 0.1)": (fb_run(fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=5, steps=100, stepsize=0.1)), True),
        "torchattacks.CW (c=1, 100 steps)": (lambda x, y: torchattacks.CW(model, c=1, kappa=0, steps=100,
                                                                          lr=0.01)(x, y), True),
        "art.CarliniL2Method (5x100)": (art_run(CarliniL2Method(art_clf, binary_search_steps=5, max_iter=100,
                                                                learning_rate=0.01, initial_const=0.01,
                                                                batch_size=256, verbose=False)), True),
    }
    return {"deepfool": deepfool, "cw_l2": cw}


def check_deepfool_matches_foolbox(model, x, y) -> dict:
    import foolbox as fb

    ours = rk.attacks.DeepFool(model).run(x, y)
    theirs = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)(
        fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)[1]
    ratio = ours.l2 / (theirs - x).flatten(1).norm(dim=1)
    agree = ((ratio - 1).abs() < 1e-2).float().mean().item()
    if agree < 0.9:
        sys.exit(f"correctness check failed: our DeepFool L2 agrees with foolbox's on only {agree:.0%} of images")
    return {"images": x.shape[0], "frac_l2_within_1pct_of_foolbox": agree}


def check_cw_fast(model, x, y) -> dict:
    res = rk.attacks.CW.fast(model).run(x, y)
    success = res.success.float().mean().item()
    in_box = bool(res.adv.min() >= 0 and res.adv.max() <= 1)
    l2_consistent = bool(torch.allclose(res.extras["l2"][res.success], res.l2[res.success], rtol=1e-4, atol=1e-5))
    if success < 0.99 or not in_box or not l2_consistent:
        sys.exit(f"correctness check failed: CW.fast success {success:.2f}, in box {in_box}, "
                 f"reported L2 = measured L2: {l2_consistent}")
    return {"images": x.shape[0], "cw_fast_success": success}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--slow-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--label", default="cpu-2core")
    parser.add_argument("--output", default="minnorm.json", help="file name under bench/results/<label>/")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    model = trained_mnist_model("lenet", seed=0, progress=False).eval()
    x, y = correctly_classified(model, args.images)
    report = {"command": "python " + " ".join(sys.argv), "machine": platform.platform(),
              "load_average_1min_at_start": os.getloadavg()[0],
              "torch": torch.__version__, "threads": args.threads, "images": args.images,
              "slow_images": args.slow_images, "check": check_deepfool_matches_foolbox(model, x[:32], y[:32]),
              "check_cw": check_cw_fast(model, x[:32], y[:32]),
              "results": {}}
    for family, runs in methods(model).items():
        rows = {}
        for name, (wall, cpu, adv, images) in timed_family(runs, x, y, args.slow_images, args.repeats).items():
            rows[name] = {"images": images, "wall_seconds": wall, "cpu_seconds": cpu,
                          "img_per_s": images / cpu, "img_per_wall_s": images / wall,
                          **measure(model, x[:images], y[:images], adv)}
            print(f"{family:8s} {name:55s} {rows[name]['img_per_s']:7.2f} img/s  success {rows[name]['success']:.3f}"
                  f"  median L2 {rows[name]['median_l2']:.3f}  ({images} images)", flush=True)
        report["results"][family] = rows
    report["load_average_1min_at_end"] = os.getloadavg()[0]  # includes this run's own threads
    print_table(report)
    out = RESULTS / args.label / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def print_table(report: dict) -> None:
    base = {"deepfool": "foolbox.L2DeepFoolAttack", "cw_l2": "foolbox.L2CarliniWagnerAttack (5x100)"}
    print("\n| attack | images | img/s | x foolbox | success | median L2 | L2 / foolbox |")
    print("|---|---|---|---|---|---|---|")
    for family, rows in report["results"].items():
        ref = rows[base[family]]
        for name, r in rows.items():
            print(f"| {name} | {r['images']} | {r['img_per_s']:.2f} | {r['img_per_s'] / ref['img_per_s']:.2f} | "
                  f"{r['success']:.3f} | {r['median_l2']:.3f} | {r['median_l2'] / ref['median_l2']:.3f} |")


if __name__ == "__main__":
    main()
