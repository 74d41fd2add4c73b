"""APGD-CE, APGD-T, Square and the standard AutoAttack: robustkit against torchattacks (and ART where it runs),
same model, same images, same eps, same process.

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
import sys

import numpy as np
import torch
import torch.nn.functional as F

import harness
import robustkit as rk
from data import correctly_classified, mnist_lenet
from harness import floor_step


def robust_accuracy(model, x, y, adv, eps: float) -> float:
    adv = torch.as_tensor(np.asarray(adv) if not isinstance(adv, torch.Tensor) else adv).detach().float()
    size = float((adv - x).abs().flatten(1).amax(dim=1).max())
    harness.check(size <= eps + 1e-5 and float(adv.min()) >= 0 and float(adv.max()) <= 1,
                  f"an attack left the eps={eps} ball or the box (largest L-inf {size:.6g})")
    with torch.no_grad():
        return float((model(adv).argmax(dim=1) == y).float().mean())


def art_classifier(model):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


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

            art = AutoProjectedGradientDescent(art_classifier(model), norm=np.inf, eps=eps, eps_step=2 * eps,
                                               max_iter=100, nb_random_init=1, batch_size=len(x),
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
        ours = rk.attacks.AutoAttack(model, eps=eps, version="standard")
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
            from art.attacks.evasion import AutoAttack as ArtAutoAttack

            art = ArtAutoAttack(art_classifier(model), norm=np.inf, eps=eps, eps_step=2 * eps, batch_size=len(x))
            fns["art"] = lambda: art.generate(xn, yn)
        return fns
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
    harness.add_arguments(parser)
    args = parser.parse_args()
    harness.apply_arguments(args)
    harness.quiet_peer_warnings()
    model = mnist_lenet()
    x, y = correctly_classified(model, args.images)
    rows = []
    for name in args.attacks.split(","):
        fns = methods(name, model, args.eps, x, y, args.art)
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
        ratios = timings.paired_ratios("torchattacks")
        strength = {method: robust_accuracy(model, x, y, outputs[method], args.eps) for method in fns}
        for method, value in strength.items():
            print(f"{name:10s} {method:12s} robust accuracy {value:.4f}", file=sys.stderr, flush=True)
        seconds = timings.median()
        row = {"attack": name, "eps": args.eps, "images": len(x), "robust_accuracy": strength,
               "at_most_torchattacks": all(strength["robustkit"] <= v for k, v in strength.items()
                                           if k.startswith("torchattacks")),
               "img_per_s": {m: len(x) / s for m, s in seconds.items()},
               **timings.to_json(("torchattacks", "torchattacks-100", "floor"))}
        rows.append(row)
        print(f"{name:10s} robust acc ours {strength['robustkit']:.4f} torchattacks {strength['torchattacks']:.4f}  "
              f"img/s ours {row['img_per_s']['robustkit']:.1f} torchattacks {row['img_per_s']['torchattacks']:.1f}  "
              f"paired speedup {ratios['robustkit']:.2f}x", flush=True)
    notes = {"model": "zoo MNIST LeNet (seed 0, 1 epoch)", "norm": "linf", "threads": torch.get_num_threads(),
             "dlr": dlr_share(model, x, y), "shared_machine": "run niced on a shared 2-core machine",
             "strength": "from each method's first timed call", "warmup": "none"}
    harness.Result(args.name, rows=rows, notes=notes).write()


if __name__ == "__main__":
    main()
