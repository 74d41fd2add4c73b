"""How GAP's universal fooling ratio on held-out data grows with training, per budget and loss (MNIST LeNet).

The generator is trained on the first --n-fit MNIST training images (batches of 64) and, after every epoch,
the fooling ratio (share of images whose predicted class changes) is measured on the first --n-test MNIST
*test* images, which the generator never saw. Also reported: a random sign pattern of the same budget (what
"no learning" gives), and with --direct-epochs N a reference with no generator: one universal delta optimised
directly by signed-gradient ascent on the same "prediction" loss (step eps/20, N passes over the fit images,
projected onto the eps ball), i.e. what the budget allows a universal perturbation on this model.

    python bench/gap.py --eps 0.0392 0.1 0.2 0.3 --epochs 8 --lr 2e-3 --loss least_likely prediction
    python bench/gap.py --direct-epochs 8 --name gap_mnist_direct
    python bench/gap.py --tiny      # one budget, one loss, 1 epoch on 128 images (-> gap_mnist-quick.json)

Writes bench/results/<machine label>/<name>.json (default gap_mnist) after every curve, so an interrupted run
keeps what it finished.
"""
from __future__ import annotations

import argparse
import time

import torch

import harness
from data import mnist_lenet, mnist_split, predict
from robustkit.attacks import GAP
from robustkit.metrics import fooling_ratio


def direct_universal(model, x_fit, eps, epochs, batch=250):
    """One delta for all images, ascending the cross-entropy of the clean predictions (signed steps)."""
    for p in model.parameters():
        p.requires_grad_(False)
    clean = predict(model, x_fit)
    delta = torch.zeros(1, *x_fit.shape[1:], requires_grad=True)
    for _ in range(epochs):
        for i in range(0, x_fit.shape[0], batch):
            loss = torch.nn.functional.cross_entropy(model((x_fit[i:i + batch] + delta).clamp(0, 1)),
                                                     clean[i:i + batch])
            grad, = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta += eps / 20 * grad.sign()
                delta.clamp_(-eps, eps)
    for p in model.parameters():
        p.requires_grad_(True)
    return delta.detach()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eps", type=float, nargs="+", default=[10 / 255, 0.1, 0.2, 0.3])
    parser.add_argument("--loss", nargs="+", default=["least_likely", "prediction"])
    parser.add_argument("--lr", type=float, nargs="+", default=[2e-3])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-fit", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--direct-epochs", type=int, default=0, help="also the directly optimised reference")
    parser.add_argument("--name", default="gap_mnist", help="result name: bench/results/<label>/<name>.json")
    parser.add_argument("--tiny", action="store_true", help="eps 0.1, loss prediction, 1 epoch, 128 fit images")
    harness.add_arguments(parser, threads=1, clock="cpu")
    args = parser.parse_args()
    if args.tiny:
        args.eps, args.loss, args.lr, args.epochs = [0.1], ["prediction"], args.lr[:1], 1
        args.n_fit, args.n_test, args.width, args.blocks = 128, 256, 4, 1
        args.direct_epochs = min(args.direct_epochs, 1)
        args.name += "-quick"
    harness.apply_arguments(args)
    model = mnist_lenet()
    x_fit = mnist_split("train")[0][:args.n_fit]
    x_test = mnist_split("test")[0][:args.n_test]
    batches = [x_fit[i:i + 64] for i in range(0, x_fit.shape[0], 64)]
    clean = predict(model, x_test)
    rows = []
    for eps in args.eps:
        sign = torch.sign(torch.randn(1, *x_test.shape[1:], generator=torch.Generator().manual_seed(0))) * eps
        random = fooling_ratio(clean, predict(model, (x_test + sign).clamp(0, 1)))
        if args.direct_epochs:
            start = time.process_time()
            delta = direct_universal(model, x_fit, eps, args.direct_epochs)
            rows.append({"eps": eps, "loss": "prediction", "method": "direct universal (no generator)",
                         "epochs": args.direct_epochs, "random_sign_fooling_ratio": random,
                         "fooling_ratio_heldout": fooling_ratio(clean, predict(model, (x_test + delta).clamp(0, 1))),
                         "cpu_s": time.process_time() - start})
            print(rows[-1], flush=True)
        for loss in args.loss:
            for lr in args.lr:
                curve, start = [], time.process_time()

                def record(epoch, gap):
                    curve.append({"epoch": epoch, "steps": epoch * len(batches),
                                  "fooling_ratio_heldout": fooling_ratio(clean, predict(model, gap(x_test))),
                                  "cpu_s": time.process_time() - start})
                    print(eps, loss, lr, curve[-1], flush=True)

                GAP(model, eps=eps, loss=loss, width=args.width, blocks=args.blocks, seed=0).fit(
                    batches, epochs=args.epochs, lr=lr, progress=False, on_epoch_end=record)
                rows.append({"eps": eps, "loss": loss, "lr": lr, "random_sign_fooling_ratio": random,
                             "curve": curve})
                harness.Result(args.name, rows, notes={"n_fit": args.n_fit, "n_test": args.n_test,
                                                       "width": args.width, "blocks": args.blocks}).write()
    for r in rows:
        if "curve" not in r:
            continue
        print(f"eps={r['eps']:.4f} loss={r['loss']} lr={r['lr']:g} random={r['random_sign_fooling_ratio']:.3f} "
              + " ".join(f"{c['fooling_ratio_heldout']:.3f}" for c in r["curve"]))


if __name__ == "__main__":
    main()
