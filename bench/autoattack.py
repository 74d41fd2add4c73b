"""APGD-CE, APGD-T, Square and the standard AutoAttack: robustkit against torchattacks (and ART where it runs),
same model, same images, same eps, same process.

Models (``--model``): ``lenet``, the zoo's MNIST LeNet (1 epoch); ``fast-at``, Wong et al.'s MNIST CNN trained
with ``FastAdversarialTraining(eps=0.3)`` through ``rk.training.fit`` (their recipe on the first 15,000
training images, 10 epochs, seed 0; trained once and cached under ``$ROBUSTKIT_CACHE`` with
``rk.zoo.cached_model``). ``--attacks rand`` puts ``RandomResizePad`` (scale 0.75-1) in front of the model and
compares AutoAttack(version="rand") with APGD-CE alone under EOT over 20 draws and with torchattacks'
``AutoAttack(version="rand")``; a randomized model's robust accuracy is the mean over 5 draws.

Budgets. robustkit's standard AutoAttack is the paper's: APGD-CE 100 steps, APGD-T 9 targets x 100 steps,
FAB-T 9 targets x 100 steps, Square 5000 queries. torchattacks' ``AutoAttack(version="standard")`` runs
APGD, APGD-T and FAB-T with its default 10 steps (Square 5000 queries): ``torchattacks`` in the tables.
``torchattacks-100`` is its ``MultiAttack`` of the same four attacks at the paper's budget, the comparison at
the same budget. ART's ``AutoAttack`` (``--art``) is its own default suite: APGD-CE and APGD-DLR with 5
restarts of 100 steps each, DeepFool (100 steps) and Square (5000 queries, 5 restarts), a larger budget.

Strength: each method's robust accuracy (the fraction of images the model still classifies correctly
on the images it returns, which must lie in the eps-ball and the [0, 1] box; a method that leaves the ball
fails the run). Then time per call on rotating rounds and paired ratios (``harness.timeit``), and the
model-only floor for APGD-CE (100 x (forward + input gradient) of the whole batch, what a 100-step attack
without early stop cannot go below). It also measures the DLR loss and its closed-form gradient against one
step, which decides whether a fused DLR kernel would pay.

    nice python bench/autoattack.py --images 200 --eps 0.1 --rounds 3 --attacks apgd-ce,apgd-t,square --art
    nice python bench/autoattack.py --images 100 --eps 0.1 --rounds 1 --attacks autoattack --name autoattack-suite
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's robustkit

import harness  # noqa: E402
import robustkit as rk  # noqa: E402
from robustkit.models import wong_mnist_cnn  # noqa: E402
from data import correctly_classified, mnist_lenet, trainable  # noqa: E402
from harness import floor_step  # noqa: E402

EPS_TRAINED = 0.3



def fast_at_mnist() -> nn.Module:
    """Wong et al.'s MNIST CNN after fast adversarial training at eps 0.3 (FGSM from a random start, step 1.25
    eps, Adam with a cyclic rate peaking at 5e-3, batch 100, the first 15,000 training images, 10 epochs)."""
    from robustkit.datasets import mnist

    def train(model: nn.Module) -> nn.Module:
        subset = torch.utils.data.Subset(mnist("train"), range(15000))
        rk.training.fit(model, subset, rk.defenses.FastAdversarialTraining(eps=EPS_TRAINED), epochs=10,
                        batch_size=100, optimizer="adam", lr=5e-3, schedule="cyclic", seed=0, progress=True)
        return model

    cache = pathlib.Path(os.environ.get("ROBUSTKIT_CACHE", pathlib.Path.home() / ".cache" / "robustkit"))
    torch.manual_seed(0)
    model = rk.zoo.cached_model(wong_mnist_cnn(), cache / "mnist-wong-fastat-eps0.3-n15000-e10-s0.pt", train)
    return trainable(model.eval())


CIFAR_ROOT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def fast_at_cifar() -> nn.Module:
    """The small CIFAR-10 CNN of ``robustkit.reproduce.defendr`` (width 16) after fast adversarial training at
    eps 8/255 (FGSM from a random start, step 1.25 eps, Adam with a cyclic rate peaking at 2e-3, batch 128, the
    shipped 50,000 training images, 5 epochs, fit's catastrophic-overfitting guard on)."""
    from robustkit.reproduce.defendr import cifar_cnn

    def train(model: nn.Module) -> nn.Module:
        rk.training.fit(model, rk.datasets.cifar10(CIFAR_ROOT, "train"),
                        rk.defenses.FastAdversarialTraining(eps=8 / 255), epochs=5, batch_size=128,
                        optimizer="adam", lr=2e-3, schedule="cyclic", seed=0, progress=True)
        return model

    torch.manual_seed(0)
    model = rk.zoo.cached_model(cifar_cnn(16), rk.zoo.default_cache_dir() / "cifar-cnn16-fastat-eps8-e5-s0.pt",
                                train)
    return trainable(model.eval())


def load_model(name: str) -> nn.Module:
    return {"lenet": mnist_lenet, "fast-at": fast_at_mnist, "cifar-fast-at": fast_at_cifar}[name]()


def test_images(name: str):
    """The evaluation split of the model's data set: MNIST's test split, or the shipped 1,000 CIFAR-10 test
    images."""
    if name == "cifar-fast-at":
        return rk.datasets.cifar10(CIFAR_ROOT, "test").tensors
    return None, None


def robust_accuracy(model, x, y, adv, eps: float, draws: int = 1) -> float:
    """Accuracy on the returned images (the mean over ``draws`` forwards for a randomized model), after
    checking that they lie in the eps-ball and the box."""
    adv = torch.as_tensor(np.asarray(adv) if not isinstance(adv, torch.Tensor) else adv).detach().float()
    size = float((adv - x).abs().flatten(1).amax(dim=1).max())
    harness.check(size <= eps + 1e-5 and float(adv.min()) >= 0 and float(adv.max()) <= 1,
                  f"an attack left the eps={eps} ball or the box (largest L-inf {size:.6g})")
    with torch.no_grad():
        return float(sum((model(adv).argmax(dim=1) == y).float().mean() for _ in range(draws)) / draws)


def art_classifier(model, shape):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(shape), nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


#: the robustkit AutoAttack instance of each suite row, for its per-stage counts
SUITES = {}


def methods(name: str, model, eps: float, x, y, with_art: bool):
    """``{method: callable returning adversarial images}`` for one attack."""
    import torchattacks

    xn, yn = x.numpy(), y.numpy()
    if name == "apgd-ce":
        ours = rk.attacks.APGD(model, eps=eps, steps=100, loss="ce")
        theirs = torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0)
        fns = {"robustkit": lambda: ours(x, y), "torchattacks": lambda: theirs(x, y)}
        if with_art:
            from art.attacks.evasion import AutoProjectedGradientDescent

            art = AutoProjectedGradientDescent(art_classifier(model, x.shape[1:]), norm=np.inf, eps=eps,
                                               eps_step=2 * eps, max_iter=100, nb_random_init=1, batch_size=len(x),
                                               loss_type="cross_entropy", verbose=False)
            fns["art"] = lambda: art.generate(xn, yn)
        return fns
    if name == "apgd-t":
        ours = rk.attacks.APGDT(model, eps=eps, steps=100, target=9)
        theirs = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0)
        return {"robustkit": lambda: ours(x, y), "torchattacks": lambda: theirs(x, y)}
    if name == "square":
        ours = rk.attacks.Square(model, eps=eps, queries=5000, p_init=0.8)
        theirs = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, seed=0)
        return {"robustkit": lambda: ours(x, y), "torchattacks": lambda: theirs(x, y)}
    if name == "autoattack":
        ours = SUITES[name] = rk.attacks.AutoAttack(model, eps=eps, version="standard")
        # torchattacks' AutoAttack(version="standard") runs APGD, APGD-T and FAB with their default 10 steps;
        # "torchattacks-100" is its MultiAttack with the AutoAttack paper's budget (100 steps, as ours)
        theirs = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
        theirs_100 = torchattacks.MultiAttack([
            torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
            torchattacks.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
            torchattacks.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True,
                             n_classes=10, seed=0),
            torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, seed=0)])
        fns = {"robustkit": lambda: ours(x, y), "torchattacks": lambda: theirs(x, y),
               "torchattacks-100": lambda: theirs_100(x, y)}
        if with_art:
            # ART's AutoAttack imports the multiprocess package even without a parallel pool
            from art.attacks.evasion import AutoAttack as ArtAutoAttack

            art = ArtAutoAttack(art_classifier(model, x.shape[1:]), norm=np.inf, eps=eps, eps_step=2 * eps,
                                batch_size=len(x))
            fns["art"] = lambda: art.generate(xn, yn)
        return fns
    if name == "rand":
        # model is the randomized one here (RandomResizePad in front)
        ours = SUITES[name] = rk.attacks.AutoAttack(model, eps=eps, version="rand")
        apgd_eot = rk.attacks.APGD(model, eps=eps, steps=100, loss="ce", eot=20)
        theirs = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="rand", n_classes=10, seed=0)
        return {"robustkit": lambda: ours(x, y), "robustkit-apgd-ce-eot20": lambda: apgd_eot(x, y),
                "torchattacks": lambda: theirs(x, y)}
    raise ValueError(name)


def dlr_share(model, x, y) -> dict:
    """Seconds of the DLR loss + closed-form logit gradient vs one (forward + input gradient) step."""
    from robustkit.attacks.dlr import dlr_loss_and_grad, targeted_dlr_loss_and_grad

    with torch.no_grad():
        logits = model(x)
    t = (y + 1) % 10
    loss_s = harness.autorange(lambda: dlr_loss_and_grad(logits, y))
    loss_t = harness.autorange(lambda: targeted_dlr_loss_and_grad(logits, y, t))
    step = harness.autorange(lambda: floor_step(model, x))
    return {"dlr_seconds": loss_s, "targeted_dlr_seconds": loss_t, "step_seconds": step,
            "dlr_share_of_step": loss_s / step, "targeted_dlr_share_of_step": loss_t / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attacks", default="apgd-ce,apgd-t,square,autoattack")
    parser.add_argument("--art", action="store_true", help="also ART's AutoProjectedGradientDescent and AutoAttack")
    parser.add_argument("--name", default="autoattack", help="result file name under bench/results/<label>/")
    parser.add_argument("--art-once", action="store_true", help="time ART in the first round only (it is slow)")
    parser.add_argument("--only", default=None, help="comma-separated methods to run besides robustkit "
                        "(e.g. art: ART's slow suite on its own)")
    parser.add_argument("--model", choices=("lenet", "fast-at", "cifar-fast-at"), default="lenet",
                        help="the zoo's MNIST LeNet, the fast adversarially trained MNIST CNN, or the fast "
                        "adversarially trained CIFAR-10 CNN")
    harness.add_arguments(parser)
    args = parser.parse_args()
    harness.apply_arguments(args)
    harness.quiet_peer_warnings()
    base = load_model(args.model)
    x, y = correctly_classified(base, args.images, *test_images(args.model))
    rows = []
    for name in args.attacks.split(","):
        model = base
        if name == "rand":
            model = rk.defenses.RandomResizePad(base, tuple(x.shape[-2:]), min_scale=0.75, max_scale=1.0,
                                                seed=0).eval()
        fns = methods(name, model, args.eps, x, y, args.art)
        if args.only:
            fns = {m: fn for m, fn in fns.items() if m == "robustkit" or m in args.only.split(",")}
        outputs = {}

        def keep(method, fn):
            return lambda: outputs.setdefault(method, fn())

        timed = {method: keep(method, fn) for method, fn in fns.items()}
        if name == "apgd-ce":
            timed["floor"] = lambda: [floor_step(model, x) for _ in range(100)]
        once = [m for m in fns if m == "art"] if args.art_once else []
        # each method's first timed call is also its strength run (the calls take minutes on a shared machine);
        # the ball and box are checked before anything is written
        timings = harness.timeit(timed, rounds=args.rounds, warmup=0, clock=args.clock, once=once, progress=True)
        reference = "torchattacks" if "torchattacks" in fns else "robustkit"
        ratios = timings.paired_ratios(reference)
        draws = 5 if name == "rand" else 1
        strength = {method: robust_accuracy(model, x, y, outputs[method], args.eps, draws) for method in fns}
        for method, value in strength.items():
            print(f"{name:10s} {method:12s} robust accuracy {value:.4f}", file=sys.stderr, flush=True)
        seconds = timings.median()
        suite = SUITES.get(name)
        if suite is not None:  # the suite's own bookkeeping: robust samples after the clean check and each attack
            print(f"{name:10s} robustkit robust after clean, {', '.join(suite.stage_names)}: {suite.last_counts}",
                  file=sys.stderr, flush=True)
        row = {"attack": name, "model": args.model, "eps": args.eps, "images": len(x), "robust_accuracy": strength,
               "at_most_torchattacks": all(strength["robustkit"] <= v for k, v in strength.items()
                                           if k.startswith("torchattacks")),
               "robust_after_each_stage": None if suite is None else dict(zip(["clean"] + suite.stage_names,
                                                                              suite.last_counts)),
               "img_per_s": {m: len(x) / s for m, s in seconds.items()},
               **timings.to_json(("torchattacks", "torchattacks-100", "robustkit-apgd-ce-eot20", "floor"))}
        if name == "rand":  # returning its best points, the suite must be no weaker than its first attack alone
            row["at_most_apgd_ce_eot20"] = strength["robustkit"] <= strength["robustkit-apgd-ce-eot20"]
        rows.append(row)
        print(f"{name:10s} robust accuracy {strength}  img/s {row['img_per_s']}  paired speedup vs {reference} "
              f"{ratios}", flush=True)
    described = {"lenet": "zoo MNIST LeNet (seed 0, 1 epoch)",
                 "fast-at": "Wong et al. MNIST CNN, FastAdversarialTraining eps 0.3, 15,000 images x 10 epochs",
                 "cifar-fast-at": "CIFAR-10 small CNN (width 16), FastAdversarialTraining eps 8/255, 50,000 images x "
                                  "5 epochs; the shipped 1,000 test images"}
    notes = {"model": described[args.model], "norm": "linf", "threads": torch.get_num_threads(),
             "dlr": dlr_share(model, x, y), "shared_machine": "run niced on a shared 2-core machine",
             "strength": "from each method's first timed call", "warmup": "none"}
    harness.Result(args.name, rows=rows, notes=notes).write()


if __name__ == "__main__":
    main()
