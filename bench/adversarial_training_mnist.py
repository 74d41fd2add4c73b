"""Adversarial training on real MNIST with robustkit.training.fit, evaluated under PGD-50 with restarts.

Recipes (Wong, Rice and Kolter 2020, MNIST): their small CNN (two stride-2 4x4 convolutions, 16 and 32 channels,
a 100-unit hidden layer), eps = 0.3, batch 100, Adam with a cyclic learning rate peaking at 5e-3 at 2/5 of
training.
  fast:  FGSM from a uniform random start, step 0.375 (1.25 eps), 10 epochs (their Table 4: 98.5% clean,
         88.8% PGD-50 x 10 restarts);
  madry: PGD-40 with step 0.01 (Madry et al.; the same model and schedule), as many epochs as given. At the
         full eps from the first step this stays at chance (docs/adversarial-training.md); ``--eps-warmup 0.25``
         ramps eps and the step up over the first quarter of training (fit's eps_warmup);
  fgsm:  Goodfellow et al.'s mixed objective (alpha = 0.5, FGSM at eps);
  clean: cross-entropy only.
Evaluation: clean accuracy on the 10,000 test images, PGD-50 (step 0.01, random start) on all of them, and
PGD-50 with ``--restarts`` random restarts on the first ``--restart-images`` (an image counts as robust only if
every restart fails). Training checkpoints every epoch in ``--out`` and resumes (``--resume``).

    nice python bench/adversarial_training_mnist.py --defense fast --epochs 10 --out runs/mnist-fast --resume
    nice python bench/adversarial_training_mnist.py --defense madry --epochs 4 --eps-warmup 0.25 --tag=-warmup \
        --out runs/mnist-madry-warmup --resume
"""
from __future__ import annotations

import argparse
import pathlib
import time

import torch
from torch import nn

import harness
from data import clean_wong_cnn
import robustkit as rk
from robustkit.datasets import mnist
from robustkit.models import wong_mnist_cnn



def objective_for(defense: str, model: nn.Module, eps: float):
    if defense == "fast":
        return rk.defenses.FastAdversarialTraining(eps=eps, step_size=1.25 * eps)
    if defense == "madry":
        return rk.defenses.AdversarialTraining(rk.attacks.PGD(model, eps=eps, step_size=0.01, steps=40))
    if defense == "fgsm":
        return rk.defenses.AdversarialTraining(rk.attacks.FGSM(model, eps=eps), clean_weight=0.5)
    return None


def robust_under_restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                          restarts: int, batch: int = 500) -> torch.Tensor:
    """[N] bool: correct on x and under every one of ``restarts`` PGD runs (later restarts only attack the images
    still robust, which gives the same answer as attacking all of them)."""
    attack = rk.attacks.PGD(model, eps=eps, step_size=0.01, steps=steps, random_start=True)
    with torch.no_grad():
        robust = torch.cat([model(x[i:i + batch]).argmax(1) == y[i:i + batch] for i in range(0, len(x), batch)])
    for _ in range(restarts):
        index = robust.nonzero().squeeze(1)
        for start in range(0, index.numel(), batch):
            rows = index[start:start + batch]
            adv = attack(x[rows], y[rows])
            with torch.no_grad():
                robust[rows] &= model(adv).argmax(1) == y[rows]
    return robust


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defense", choices=("fast", "madry", "fgsm", "clean"), default="fast")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=5e-3, help="the peak learning rate (Adam)")
    parser.add_argument("--schedule", choices=("cyclic", "constant"), default="cyclic",
                        help="cyclic: Wong et al.'s; constant: the flat rate of Madry et al.'s MNIST recipe")
    parser.add_argument("--eps-warmup", type=float, default=0.0,
                        help="fraction of training over which eps (and the attack's step) ramps up from 0")
    parser.add_argument("--init", choices=("random", "clean"), default="random",
                        help="clean: start from the CNN after one clean epoch (bench/data.py's clean_wong_cnn)")
    parser.add_argument("--tag", default="", help="suffix of the result name, to keep one recipe's result "
                        "beside another's (adversarial_training_mnist-<defense><tag>.json)")
    parser.add_argument("--out", required=True, help="checkpoint folder of the run")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images")
    parser.add_argument("--pgd-images", type=int, default=10000, help="test images for PGD-50 (one start)")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--restart-images", type=int, default=1000)
    parser.add_argument("--eval-only", action="store_true", help="evaluate the run's last checkpoint as it is")
    args = harness.parse_arguments(parser, threads=1, clock="wall")

    torch.manual_seed(args.seed)
    model = clean_wong_cnn() if args.init == "clean" else wong_mnist_cnn()
    objective = objective_for(args.defense, model, args.eps)
    out = pathlib.Path(args.out)
    started = time.perf_counter()
    cpu_started = time.process_time()
    if args.eval_only:
        state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        history = rk.training.History(**state["history"])
    else:
        train = mnist("train") if args.limit is None else torch.utils.data.Subset(mnist("train"), range(args.limit))
        history = rk.training.fit(model, train, objective, epochs=args.epochs, batch_size=100,
                                  optimizer="adam", lr=args.lr, schedule=args.schedule, checkpoint_dir=out,
                                  resume=args.resume, seed=args.seed, progress=True,
                                  eps_warmup=args.eps_warmup)
    train_wall, train_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    model.eval()
    x, y = mnist("test").tensors
    eval_started = time.perf_counter()
    with torch.no_grad():
        clean = torch.cat([model(x[i:i + 1000]).argmax(1) == y[i:i + 1000] for i in range(0, len(x), 1000)])
    pgd_one = robust_under_restarts(model, x[:args.pgd_images], y[:args.pgd_images], args.eps, 50, 1)
    n = args.restart_images
    pgd_many = robust_under_restarts(model, x[:n], y[:n], args.eps, 50, args.restarts)
    row = {"defense": args.defense, "epochs_trained": len(history), "stopped": history.stopped,
           "clean_accuracy": float(clean.float().mean()),
           f"pgd50_accuracy_first{args.pgd_images}": float(pgd_one.float().mean()),
           "train_images": args.limit or 60000,
           f"pgd50x{args.restarts}_accuracy_first{n}": float(pgd_many.float().mean()),
           "clean_accuracy_first_n": float(clean[:n].float().mean()),
           "train_wall_seconds_this_call": train_wall, "train_cpu_seconds_this_call": train_cpu,
           "train_seconds_per_epoch": [epoch["seconds"] for epoch in history.epochs],
           "eval_wall_seconds": time.perf_counter() - eval_started, "history": history.epochs}
    print({k: v for k, v in row.items() if k != "history"})
    harness.Result(f"adversarial_training_mnist-{args.defense}{args.tag}", rows=[row],
                   notes={"model": "Wong et al. 2020 MNIST CNN", "eps": args.eps, "batch_size": 100,
                          "init": args.init, "eps_warmup": args.eps_warmup, "optimizer": "adam", "lr_max": args.lr,
                          "schedule": args.schedule, "seed": args.seed,
                          "machine": "2 cores shared with other jobs; 1 thread, niced"}).write()


if __name__ == "__main__":
    main()
