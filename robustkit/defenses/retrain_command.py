"""``robustkit retrain``: the retraining seed's experiment from the command line (see
:mod:`robustkit.defenses.retrain`), writing its table columns to ``--out`` as JSON and markdown.

    robustkit retrain --data mnist --attack fgsm --eps 0.07 --n-adversarial 3000 1500 --epochs 1 \\
                      --pca-dim 50 --labels labeler source --out runs/retrain
    robustkit retrain --data cifar10:../shared/data/cifar10 --attack gap --eps 10/255 --n-train 10000 \\
                      --n-test 300 --n-adversarial 2000 --pca-dim 300 --out runs/retrain-cifar

MNIST: train = the first ``--n-train`` training images, test = the first ``--n-test`` test images, model
``mnist:lenet`` (the cached trained LeNet) unless ``--model`` says otherwise. CIFAR-10: the same from
``cifar10:DIR``'s train and test batches; a model without weights (``--model`` without ``--weights``, default
a width-16 ``ResNet18Cifar``) is first trained ``--train-epochs`` epochs on the training images.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

ATTACKS = ("fgsm", "gap", "deepfool", "cw")
COLUMNS = (("attack", "attacker"), ("n_adversarial", "adv. images"), ("labels", "labels"),
           ("accuracy_original_before", "acc. original before"), ("accuracy_original", "acc. original after"),
           ("accuracy_adversarial_before", "acc. adversarial before"),
           ("accuracy_adversarial", "acc. adversarial after"), ("fooling_ratio_before", "fooling ratio before"),
           ("fooling_ratio_after", "after, re-attacked"), ("fooling_ratio_after_transfer", "after, old adv. images"),
           ("detected_after", "detected (re-attacked)"), ("labeler_accuracy", "labeler acc."),
           ("n_fooling", "fooling images"), ("fooling_classes", "new classes"))


def add_parser(sub) -> None:
    p = sub.add_parser("retrain", help="retrain a classifier on labelled adversarial images and re-attack it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist", help="mnist | cifar10:DIR (default: mnist)")
    p.add_argument("--model", default=None, help="mnist:<arch> or pkg.module:Factory (default: mnist:lenet, "
                   "or robustkit.models:ResNet18Cifar with width 16 for cifar10)")
    p.add_argument("--weights", default=None, help="state dict for --model")
    p.add_argument("--model-args", default=None, help="JSON keyword arguments for the factory")
    p.add_argument("--train-epochs", type=int, default=3, help="epochs to train a model that has no weights")
    p.add_argument("--attack", default="fgsm", choices=ATTACKS)
    p.add_argument("--eps", default=None, help="L-inf budget for fgsm / gap, e.g. 0.07 or 10/255 (default: 0.07 "
                   "for fgsm; for gap 0.2 on mnist, 10/255 on cifar10)")
    p.add_argument("--gap-epochs", type=int, default=4, help="GAP generator training epochs")
    p.add_argument("--gap-fit", type=int, default=2000, help="training images the GAP generator is trained on")
    p.add_argument("--gap-loss", default="prediction", choices=("prediction", "least_likely"))
    p.add_argument("--n-adversarial", type=int, nargs="+", default=[1000], help="one row per value")
    p.add_argument("--n-train", type=int, default=None, help="training images (default: all)")
    p.add_argument("--n-original", type=int, default=None,
                   help="original training images in the retraining set (default: all --n-train)")
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=1, help="retraining epochs")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--pca-dim", type=int, default=None, help="labeler PCA dims (default: 50 mnist, 300 cifar10)")
    p.add_argument("--labels", nargs="+", default=["labeler"], choices=("labeler", "source"))
    p.add_argument("--fooling", default="new_class", choices=("new_class", "drop"))
    p.add_argument("--fooling-threshold", default="none", help="none | auto | a distance")
    p.add_argument("--fooling-clusters", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="directory for retraining.json and retraining.md")


def run(args) -> int:
    import torch

    from robustkit.defenses import KNNLabeler, Retrainer
    from robustkit.defenses.retrain import count_outputs
    from robustkit.eval.suite import SpecError, parse_eps

    torch.manual_seed(args.seed)
    for name in ("n_test", "epochs", "gap_epochs", "gap_fit", "fooling_clusters"):
        if getattr(args, name) < 1:
            raise SpecError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    threshold = args.fooling_threshold.lower()
    if threshold == "none":
        threshold = None
    elif threshold != "auto":
        try:
            threshold = float(threshold)
        except ValueError:
            raise SpecError(f"--fooling-threshold: none, auto or a number, got {args.fooling_threshold!r}") from None
    kind = args.data.partition(":")[0]
    train, test = _data(args.data, args.n_train, args.n_test)
    model = _model(args, kind, train).to(args.device).eval()
    eps = parse_eps(args.eps)[0] if args.eps else {"fgsm": 0.07, "gap": 0.2 if kind == "mnist" else 10 / 255}.get(
        args.attack)
    factory = _attack_factory(args, eps, train[0])
    pca_dim = args.pca_dim or (50 if kind == "mnist" else 300)
    labeler = KNNLabeler(pca_dim=pca_dim, fooling_threshold=threshold, fooling_clusters=args.fooling_clusters)
    n_original = args.n_original or train[0].shape[0]
    original = (train[0][:n_original], train[1][:n_original])
    labeler.fit(*original, num_classes=count_outputs(model, test[0][:1], torch.device(args.device)))
    rows = []
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for n in args.n_adversarial:
        for labels in args.labels:
            start = time.perf_counter()
            report = Retrainer(model, factory, labeler, n_adversarial=n, epochs=args.epochs, lr=args.lr,
                               labels=labels, fooling=args.fooling, seed=args.seed).run(original, test)
            rows.append({"attack": args.attack, **report.as_dict(), "seconds": time.perf_counter() - start})
            print(format_row(rows[-1]), flush=True)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(eps=eps, pca_dim=pca_dim, n_train=train[0].shape[0], n_test=test[0].shape[0],
                  n_original=n_original)
    (out / "retraining.json").write_text(json.dumps({"config": config, "rows": rows}, indent=2) + "\n")
    (out / "retraining.md").write_text(markdown_table(rows) + "\n")
    print(f"results: {out / 'retraining.json'}, {out / 'retraining.md'}")
    return 0


def markdown_table(rows) -> str:
    """The seed's columns, one row per run; rates as percentages."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def format_row(row) -> str:
    return ", ".join(f"{title}: {_cell(row.get(key))}" for key, title in COLUMNS)


def _cell(value) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{100 * value:.1f}%"
    return str(value)


def _data(spec: str, n_train, n_test):
    from robustkit import datasets
    from robustkit.eval.suite import SpecError
    kind, _, root = spec.partition(":")
    try:
        if kind == "mnist":
            train, test = datasets.mnist("train", root=root or None), datasets.mnist("test", root=root or None)
        elif kind == "cifar10" and root:
            train, test = datasets.cifar10(root, "train"), datasets.cifar10(root, "test")
        else:
            raise SpecError(f"--data: expected mnist or cifar10:DIR, got {spec!r}")
    except (FileNotFoundError, NotADirectoryError) as error:
        raise SpecError(f"--data: {error}") from None
    (x_tr, y_tr), (x_te, y_te) = train.tensors, test.tensors
    n_train = x_tr.shape[0] if n_train is None else n_train
    if n_train < 1:
        raise SpecError(f"--n-train: must be >= 1, got {n_train}")
    return (x_tr[:n_train], y_tr[:n_train]), (x_te[:n_test], y_te[:n_test])


def _model(args, kind, train):
    import torch

    from robustkit.eval.suite import make_model
    from robustkit.training import train_classifier
    spec = args.model or ("mnist:lenet" if kind == "mnist" else "robustkit.models:ResNet18Cifar")
    model_args = args.model_args or (None if args.model else ('{"width": 16}' if kind != "mnist" else None))
    model = make_model(spec, weights=args.weights, model_args=model_args)
    if not spec.startswith("mnist:") and args.weights is None and "@" not in spec:
        print(f"robustkit retrain: {spec} has no --weights: training it {args.train_epochs} epochs on "
              f"{train[0].shape[0]} training images first")
        model = train_classifier(model, torch.utils.data.TensorDataset(*train), epochs=args.train_epochs,
                                 lr=1e-3, batch_size=128, seed=args.seed, device=args.device, progress=False)
    return model


def _attack_factory(args, eps, x_train):
    from robustkit import attacks
    if args.attack == "fgsm":
        return lambda m: attacks.FGSM(m, eps=eps)
    if args.attack == "gap":
        batches = [x_train[i:i + 64] for i in range(0, min(args.gap_fit, x_train.shape[0]), 64)]
        return lambda m: attacks.GAP(m, eps=eps, loss=args.gap_loss, width=16, blocks=3, seed=args.seed).fit(
            [b.to(args.device) for b in batches], epochs=args.gap_epochs, lr=2e-3, progress=False)
    if args.attack == "deepfool":
        return lambda m: attacks.DeepFool(m, steps=50)
    import functools
    # the seed's C&W L2 toward the least-likely class, at a budget a CPU can run (3 x 100 Adam steps)
    return lambda m: functools.partial(attacks.CW(m, binary_search_steps=3, steps=100, lr=0.05, initial_const=1.0),
                                       target="least_likely")
