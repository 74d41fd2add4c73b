"""The Defendr seed's input defenses on MNIST, as the seed measured them and under adaptive attacks.

Defendr's ImageNet subset and ResNet-101 are not available here; this runs the same defenses around the zoo's
trained MNIST LeNet:
- ``RandomResizePad`` (Xie et al.; scale 0.75-1 on the 28 px canvas);
- ``GuidedDenoiser`` with a ``DUNet`` trained by ``train_denoiser`` (HGD's logits guide) on FGSM and PGD
  examples of the undefended LeNet;
- both together.

Each row gives clean accuracy and robust accuracy at eps (L-inf) under:
- the seed's attack: FGSM computed on the *undefended* model and fed to the defended one (the seed and HGD
  evaluate their denoiser on such examples), and FGSM on the defended model with one forward;
- adaptive attacks: PGD-40 through the whole differentiable pipeline; PGD-40 with BPDA (the denoiser's
  backward replaced by the identity); APGD-CE with EOT-20 for the randomized models; and AutoAttack
  (``fast``: APGD-CE + APGD-T; ``rand`` with EOT for the randomized models).

    python bench/defendr_input_mnist.py --images 500          # ~10 minutes of one CPU core
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch
from torch import nn

import harness
from data import mnist_lenet, mnist_split

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import robustkit as rk  # noqa: E402


def accuracy(model, x, y, draws=1):
    """Mean accuracy over ``draws`` forwards (a randomized model's expected accuracy)."""
    with torch.no_grad():
        return float(sum((model(x).argmax(1) == y).float().mean() for _ in range(draws)) / draws)


def train_hgd(lenet, out: pathlib.Path, images: int, epochs: int):
    den = rk.defenses.DUNet(1, (16, 32, 64, 64))
    path = out / "dunet.pt"
    if path.exists():
        den.load_state_dict(torch.load(path, weights_only=True))
        return den.eval()
    x, y = mnist_split("train")
    attacks = [rk.attacks.FGSM(lenet, eps=0.3), rk.attacks.PGD(lenet, eps=0.3, step_size=0.03, steps=10),
               rk.attacks.FGSM(lenet, eps=0.12), rk.attacks.PGD(lenet, eps=0.12, step_size=0.015, steps=10)]
    torch.manual_seed(0)
    rk.defenses.train_denoiser(den, lenet, (x[:images], y[:images]), attacks, guide="logits", epochs=epochs,
                               batch_size=100, optimizer="adam", lr=1e-3, checkpoint_dir=out / "hgd",
                               resume=True, seed=0)
    torch.save(den.state_dict(), path)
    return den.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="test images evaluated")
    parser.add_argument("--train-images", type=int, default=20000, help="denoiser training images")
    parser.add_argument("--epochs", type=int, default=2, help="denoiser training epochs")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.12, 0.3])
    parser.add_argument("--out", default="runs/defendr_input_mnist")
    args = harness.parse_arguments(parser, threads=None, clock="wall")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    lenet = mnist_lenet()
    for p in lenet.parameters():
        p.requires_grad_(False)
    den = train_hgd(lenet, out, args.train_images, args.epochs)
    train_seconds = time.time() - start
    x_all, y_all = mnist_split("test")
    x, y = x_all[:args.images].contiguous(), y_all[:args.images].contiguous()

    hgd = rk.defenses.GuidedDenoiser(den, lenet).eval()
    bpda_hgd = nn.Sequential(rk.attacks.BPDA(hgd.denoise), lenet).eval()   # identity backward through D
    rrp = rk.defenses.RandomResizePad(lenet, 28, min_scale=0.75, max_scale=1.0, seed=0).eval()
    both = rk.defenses.RandomResizePad(hgd, 28, min_scale=0.75, max_scale=1.0, seed=1).eval()
    defenses = {"baseline": (lenet, None, False), "random resize+pad": (rrp, None, True),
                "HGD (DUNET)": (hgd, bpda_hgd, False), "HGD + random resize+pad": (both, None, True)}
    rows = []
    for eps in args.eps:
        seed_fgsm = rk.attacks.FGSM(lenet, eps=eps)(x, y)          # on the undefended model (gray box)
        for name, (model, bpda_model, random) in defenses.items():
            draws = 5 if random else 1
            row = {"defense": name, "eps": eps, "clean": accuracy(model, x, y, draws),
                   "fgsm, transferred from the undefended model (the seed's)": accuracy(model, seed_fgsm, y, draws),
                   "fgsm on the defense, one forward": accuracy(model, rk.attacks.FGSM(model, eps=eps)(x, y), y,
                                                                draws),
                   "pgd-40 white-box": accuracy(model, rk.attacks.PGD(model, eps=eps, steps=40,
                                                                      step_size=eps / 10)(x, y), y, draws)}
            if bpda_model is not None:
                row["pgd-40 bpda"] = accuracy(model, rk.attacks.PGD(bpda_model, eps=eps, steps=40,
                                                                    step_size=eps / 10)(x, y), y, draws)
            if random:
                row["apgd-ce eot-20"] = accuracy(model, rk.attacks.APGD(model, eps=eps, steps=100, eot=20)(x, y),
                                                 y, draws)
            version = "rand" if random else "fast"
            aa = rk.attacks.AutoAttack(model, eps=eps, version=version)
            row[f"autoattack ({version})"] = accuracy(model, aa(x, y), y, draws)
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = []
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for r in rows:
        lines.append("| " + " | ".join(f"{100 * r[c]:.1f}%" if isinstance(r.get(c), float) and c != "eps"
                                       else str(r.get(c, "–")) for c in columns) + " |")
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    harness.Result("defendr_input_mnist", rows, notes={"args": vars(args), "train_seconds": train_seconds,
                                                       "seconds": time.time() - start}).write()


if __name__ == "__main__":
    main()
