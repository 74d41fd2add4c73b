"""Minimum-norm attacks (DeepFool, C&W L2) vs foolbox, torchattacks and ART on a trained MNIST LeNet.

Every method attacks the same correctly classified MNIST test images; success and L2 are measured the
same way for all (prediction of the returned image != label; ||adv - x||_2 over the successes).
Correctness first: our DeepFool must agree image by image with foolbox's (the same algorithm), and
CW.fast must break >= 99 % of the images inside the box, before anything is timed. Each method is
warmed up on 8 images, then timed over the whole set (median of ``--repeats`` rounds in rotating order,
bench/harness.py, for ours and foolbox; the peers that are >10x slower run once, in the first round, on
``--slow-images``). img/s is per second of process CPU time by default (robust to the shared machine's load
with ``--threads 1``; ``--clock wall`` for elapsed time); the wall-clock rate is kept next to it, and
``x_foolbox_paired`` is the median over rounds of the two methods' rate ratio in the same round. robustkit's attacks run with their default ``conv_input_grad="robustkit"``
(the LeNet's first-conv input gradient on robustkit's kernel); the ``conv_input_grad=torch`` row runs PyTorch's
kernels throughout, as the peers do.

    python bench/minnorm.py [--images 256] [--slow-images 64] [--repeats 3] [--threads 1]
    python bench/minnorm.py --tiny      # 8 images (2 for the slow peers), 1 round (-> minnorm-quick.json)

Writes bench/results/<machine label>/<output> (default minnorm.json; the label is harness.machine_label(),
``--label`` or $ROBUSTKIT_BENCH_LABEL overrides it).
"""
from __future__ import annotations

import argparse
import warnings

import torch

import harness
import robustkit as rk
from data import attack_outcome, correctly_classified, mnist_lenet

#: each family's reference for the ratios
BASE = {"deepfool": "foolbox.L2DeepFoolAttack", "cw_l2": "foolbox.L2CarliniWagnerAttack (5x100)"}


def timed_family(model, family: str, runs: dict, x, y, slow_images: int, args) -> dict:
    """``{name: row}`` with seconds on both clocks, img/s, the paired rate ratio to foolbox and the outcome
    (success, median L2) of the last run. Slow methods run once, in the first round, on ``slow_images``."""
    data = {name: (x[:slow_images], y[:slow_images]) if slow else (x, y) for name, (_, slow) in runs.items()}
    for name, (run, _) in runs.items():
        run(data[name][0][:args.warmup_images], data[name][1][:args.warmup_images])  # warm-up
    adv = {}

    def call(name):
        run = runs[name][0]
        return lambda: adv.__setitem__(name, run(*data[name]))

    images = {name: data[name][0].shape[0] for name in runs}
    t = harness.timeit({name: call(name) for name in runs}, rounds=args.repeats, warmup=0, clock=args.clock,
                       once=[name for name, (_, slow) in runs.items() if slow])
    seconds, wall = t.median(), t.median("wall")
    paired = t.paired_ratios(BASE[family], per=images)
    return {name: {"images": images[name], "seconds": seconds[name], "wall_seconds": wall[name],
                   "rounds": t.rounds[name], "img_per_s": images[name] / seconds[name],
                   "img_per_wall_s": images[name] / wall[name], "x_foolbox_paired": paired[name],
                   **attack_outcome(model, x[:images[name]], y[:images[name]], adv[name])}
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
    harness.check_at_least("fraction of images where our DeepFool's L2 is within 1% of foolbox's", agree, 0.9)
    return {"images": x.shape[0], "frac_l2_within_1pct_of_foolbox": agree}


def check_cw_fast(model, x, y) -> dict:
    res = rk.attacks.CW.fast(model).run(x, y)
    success = res.success.float().mean().item()
    in_box = bool(res.adv.min() >= 0 and res.adv.max() <= 1)
    l2_consistent = bool(torch.allclose(res.extras["best_l2"][res.success], res.l2[res.success], rtol=1e-4, atol=1e-5))
    harness.check(success >= 0.99 and in_box and l2_consistent,
                  f"CW.fast success {success:.2f}, in box {in_box}, reported L2 = measured L2: {l2_consistent}")
    return {"images": x.shape[0], "cw_fast_success": success}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--slow-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (slow peers: the first only)")
    harness.add_arguments(parser, threads=1, clock="cpu")
    parser.add_argument("--output", default="minnorm", help="result name: bench/results/<label>/<output>.json")
    parser.add_argument("--tiny", action="store_true", help="8 images, 2 for slow peers, 1 round: checks the script")
    args = parser.parse_args()
    args.warmup_images = 8
    if args.tiny:
        args.images, args.slow_images, args.repeats = min(args.images, 8), min(args.slow_images, 2), 1
        args.warmup_images = 2
    harness.apply_arguments(args)
    warnings.filterwarnings("ignore")
    model = mnist_lenet()
    x, y = correctly_classified(model, args.images)
    check_images = min(32, args.images)
    notes = {"threads": torch.get_num_threads(), "clock": args.clock, "rounds": args.repeats, "images": args.images,
             "slow_images": args.slow_images,
             "check": check_deepfool_matches_foolbox(model, x[:check_images], y[:check_images]),
             "check_cw": check_cw_fast(model, x[:check_images], y[:check_images])}
    results = {}
    for family, runs in methods(model).items():
        rows = timed_family(model, family, runs, x, y, args.slow_images, args)
        for name, r in rows.items():
            print(f"{family:8s} {name:55s} {r['img_per_s']:7.2f} img/s  success {r['success']:.3f}"
                  f"  median L2 {r['median_l2']:.3f}  ({r['images']} images)", flush=True)
        results[family] = rows
    print_table(results)
    name = args.output.removesuffix(".json") + ("-quick" if args.tiny else "")
    harness.Result(name, results, notes=notes).write()


def print_table(results: dict) -> None:
    print("\n| attack | images | img/s | x foolbox | x foolbox (paired) | success | median L2 | L2 / foolbox |")
    print("|---|---|---|---|---|---|---|---|")
    for family, rows in results.items():
        ref = rows[BASE[family]]
        for name, r in rows.items():
            print(f"| {name} | {r['images']} | {r['img_per_s']:.2f} | {r['img_per_s'] / ref['img_per_s']:.2f} | "
                  f"{r['x_foolbox_paired']:.2f} | {r['success']:.3f} | {r['median_l2']:.3f} | "
                  f"{r['median_l2'] / ref['median_l2']:.3f} |")


if __name__ == "__main__":
    main()
