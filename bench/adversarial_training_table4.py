"""The Defendr seed's Table 4 with white-box evaluation: FGSM-trained against PGD-trained models, at two eps.

The seed (Dornadula et al., sections 4.1 and 6.2) augments the training set with FGSM or PGD examples (the
training set is doubled: here a 50/50 clean/adversarial loss on every minibatch, ``clean_weight=0.5``) at
eps 0.12 or 0.3, and trains with Adam, learning rate 1e-3, batch 128, for 15-20 epochs. It does not give the
number of PGD steps; here PGD-10, step eps/4, from a random start (as ``robustkit reproduce defendr``).
Models here, in place of its ResNet-101 on an ImageNet subset:
  mnist:   the small CNN of Wong et al. 2020 (two stride-2 4x4 convolutions, 16 and 32 channels, a 100-unit
           layer); eps 0.12 and 0.3 in [0, 1] pixels;
  cifar10: the small CNN of robustkit.reproduce.defendr (``cifar_cnn``, width ``--width``); eps 0.12 and 0.3
           times 0.225, the seed's budgets on its std-normalised inputs (0.027 and 0.0675). The shipped test
           set is the first 1,000 CIFAR-10 test images.
Rows: a clean-trained baseline, then FGSM- and PGD-trained models at each training eps. Columns, at each test
eps: clean accuracy, FGSM and PGD-10 (the seed's attacks; white-box on each model, on all test images), and
the strong attacks on the first ``--strong-images``: PGD-50 (step eps/30) with ``--restarts`` random restarts
(robust only if every restart fails), APGD-CE (100 steps), and the per-image worst case over all four attacks.

Each model checkpoints every epoch under ``--out/<model>`` and each evaluation is cached there, so a killed run
resumes; the result file is rewritten after every model.

    nice python bench/adversarial_training_table4.py --data mnist --epochs 5 --out runs/table4-mnist
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch
from torch import nn

import harness
import robustkit as rk
from robustkit.models import wong_mnist_cnn
from robustkit.reproduce.defendr import cifar_cnn

# Table 4 of the seed (fully adversarial test sets; FGSM, PGD accuracy %).
SEED_TABLE4 = {"Baseline FGSM (0.12)": (71, 80), "Baseline PGD (0.12)": (69.35, 81)}



def load(data: str, root: pathlib.Path):
    if data == "mnist":
        return rk.datasets.mnist("train").tensors, rk.datasets.mnist("test").tensors, (0.12, 0.3)
    train = rk.datasets.cifar10(root / "cifar10", "train").tensors
    test = rk.datasets.cifar10(root / "cifar10", "test").tensors
    return train, test, (0.12 * 0.225, 0.3 * 0.225)


def objective(kind: str, model: nn.Module, eps: float):
    if kind == "clean":
        return None
    if kind == "fgsm":
        attack = rk.attacks.FGSM(model, eps=eps)
    else:
        attack = rk.attacks.PGD(model, eps=eps, step_size=eps / 4, steps=10)
    return rk.defenses.AdversarialTraining(attack, clean_weight=0.5)


def predictions_right(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) == y[i:i + batch] for i in range(0, len(x), batch)])


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, strong: int, restarts: int) -> dict:
    """Accuracies (fractions) at one test eps; per-image for the strong attacks, so the worst case is exact."""
    model.eval()
    clean = predictions_right(model, x, y)
    out = {"clean": float(clean.float().mean())}
    seconds = {}
    attacks = {"fgsm": rk.attacks.FGSM(model, eps=eps),
               "pgd10": rk.attacks.PGD(model, eps=eps, step_size=eps / 4, steps=10, seed=0)}
    robust = {}
    for name, attack in attacks.items():
        started = time.process_time()
        adv = torch.cat([attack(x[i:i + 1000], y[i:i + 1000]) for i in range(0, len(x), 1000)])
        robust[name] = clean & predictions_right(model, adv, y)
        out[name] = float(robust[name].float().mean())
        seconds[name] = time.process_time() - started
    xs, ys, right = x[:strong], y[:strong], clean[:strong]
    started = time.process_time()
    res = rk.attacks.PGD(model, eps=eps, step_size=eps / 30, steps=50, restarts=restarts, early_stop=True,
                         seed=0, batch_size=500).run(xs, ys)
    pgd_many = right & ~res.success
    seconds["pgd50_restarts"] = time.process_time() - started
    started = time.process_time()
    res = rk.attacks.APGD(model, eps=eps, steps=100, seed=0, batch_size=500).run(xs, ys)
    apgd = right & ~res.success
    seconds["apgd_ce"] = time.process_time() - started
    out.update({"clean_strong_subset": float(right.float().mean()),
                f"pgd50x{restarts}": float(pgd_many.float().mean()), "apgd_ce": float(apgd.float().mean()),
                "fgsm_strong_subset": float(robust["fgsm"][:strong].float().mean()),
                "pgd10_strong_subset": float(robust["pgd10"][:strong].float().mean()),
                "worst_case": float((pgd_many & apgd & robust["fgsm"][:strong] & robust["pgd10"][:strong])
                                    .float().mean()), "cpu_seconds": seconds})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--root", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder holding cifar10/ (MNIST ships with robustkit)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images")
    parser.add_argument("--width", type=int, default=16, help="cifar_cnn width (CIFAR-10 only)")
    parser.add_argument("--models", default="clean,fgsm-small,pgd-small,fgsm-large,pgd-large",
                        help="comma list of clean, fgsm-small, pgd-small, fgsm-large, pgd-large (in this order)")
    parser.add_argument("--strong-images", type=int, default=1000, help="test images for PGD-50 x restarts, APGD")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder of the run: a checkpoint folder per model")
    args = harness.parse_arguments(parser, threads=1, clock="cpu")

    (x, y), (xt, yt), (small, large) = load(args.data, pathlib.Path(args.root))
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    out = pathlib.Path(args.out)
    training = dict(epochs=args.epochs, batch_size=128, optimizer="adam", lr=1e-3, schedule="constant",
                    seed=args.seed)
    rows = []
    for name in args.models.split(","):
        kind, _, size = name.partition("-")
        train_eps = {"": None, "small": small, "large": large}[size]
        torch.manual_seed(args.seed)
        model = wong_mnist_cnn() if args.data == "mnist" else cifar_cnn(args.width)
        folder = out / name
        cpu, wall = time.process_time(), time.perf_counter()
        history = rk.training.fit(model, (x, y), objective(kind, model, train_eps), checkpoint_dir=folder,
                                  resume=True, progress=True, **training)
        train_cpu, train_wall = time.process_time() - cpu, time.perf_counter() - wall
        row = {"model": name, "trained_on": kind, "train_eps": train_eps, "epochs": len(history),
               "train_images": len(x), "train_seconds_per_epoch": [e["seconds"] for e in history.epochs],
               "train_cpu_seconds_this_call": train_cpu, "train_wall_seconds_this_call": train_wall,
               "train_accuracy_last_epoch": history.epochs[-1]["train_accuracy"]}
        for eps in (small, large):
            cache = folder / f"eval-eps{eps:g}-strong{args.strong_images}-r{args.restarts}.json"
            if cache.is_file():
                result = json.loads(cache.read_text())
            else:
                result = evaluate(model, xt, yt, eps, args.strong_images, args.restarts)
                cache.write_text(json.dumps(result, indent=1))
            row[f"test_eps{eps:g}"] = result
            print(name, f"eps {eps:g}", {k: v for k, v in result.items() if k != "cpu_seconds"}, flush=True)
        rows.append(row)
        harness.Result(f"adversarial_training_table4-{args.data}", rows=rows,
                       notes={"model": "Wong et al. 2020 MNIST CNN" if args.data == "mnist"
                              else f"robustkit.reproduce.defendr.cifar_cnn(width={args.width})",
                              "train_eps": [small, large], "objective": "AdversarialTraining(clean_weight=0.5)",
                              "train_pgd": "PGD-10, step eps/4, random start", **training,
                              "test_images": len(xt), "strong_images": args.strong_images,
                              "strong_attacks": f"PGD-50 step eps/30 x {args.restarts} restarts; APGD-CE 100 steps",
                              "seed_table4": SEED_TABLE4,
                              "machine": "2 cores shared with other jobs; 1 thread, niced"}).write()


if __name__ == "__main__":
    main()
