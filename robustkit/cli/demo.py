"""``robustkit demo``: train (or load) a LeNet on MNIST, attack it with every attack, write a report."""
from __future__ import annotations

import pathlib
import shutil

from robustkit.cli import options

DEMO_ATTACKS = ("fgsm", "pgd", "mifgsm", "dmifgsm", "deepfool", "cw")
DEMO_EPS = 0.1
DEMO_FGSM_SWEEP = (0.05, 0.1, 0.2, 0.3)
FAST_TRAIN_IMAGES = 6000


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train (or load) a LeNet on MNIST, attack it, write a report",
                              description="Train (or load from the cache) a LeNet on MNIST, run every attack on "
                                          "the test images and write results.json and report.html.")
    p.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument("--fast", action="store_true", help="small model, 100 images, few steps (seconds)")
    options.add_device(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")


def demo_model(fast: bool, device="cpu"):
    """The full demo loads (or trains once, about a minute on 2 cores) the cached LeNet of
    :func:`robustkit.zoo.trained_mnist_model`; ``--fast`` one trained on the first 6,000 training images."""
    from robustkit.zoo import trained_mnist_model
    return trained_mnist_model("lenet", n_train=FAST_TRAIN_IMAGES if fast else None, device=device,
                               progress=True)


def run(args) -> int:
    import torch

    from robustkit.cli import specs
    from robustkit.datasets import mnist
    from robustkit.eval import evaluate
    from robustkit.eval.storage import write_atomic
    out = options.check_out(args.out)
    device = options.resolve_device(args.device)
    if not args.resume:
        for stale in ("records", "run.json", "results.json", "examples.pt"):
            path = out / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    model = demo_model(args.fast, device)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    write_atomic(out / "model.pt", lambda tmp: torch.save(state, tmp))
    attacks = {}
    for name in DEMO_ATTACKS:
        # DeepFool stops each image as soon as it crosses the boundary: its own step budget costs little
        steps = {"fgsm": None, "deepfool": None, "cw": 20 if args.fast else None}.get(name, 5 if args.fast else None)
        # FGSM at several budgets draws the accuracy-vs-eps curve of a fixed-budget attack (one run per eps)
        eps = list(DEMO_FGSM_SWEEP) if name == "fgsm" else [DEMO_EPS]
        attacks.update(specs.make_attacks([name], model, eps, steps))
    results = evaluate(model, mnist("test"), attacks, out=out, limit=100 if args.fast else 1000,
                       batch_size=100 if args.fast else 250, device=device, resume=True,
                       model_name="lenet", examples=8)
    print(f"LeNet on MNIST test, L-inf eps = {DEMO_EPS} for the fixed-budget attacks (FGSM also at "
          f"{', '.join(map(str, DEMO_FGSM_SWEEP))}); model: {pathlib.Path(out) / 'model.pt'}")
    options.print_summary(results, out)
    return 0
