"""``robustkit retrain``: the retraining seed's experiment (:mod:`robustkit.defenses.retrain`) from the
command line, writing its table columns to ``--out`` as JSON and markdown."""
from __future__ import annotations

import argparse
import time

from robustkit.cli import options

ATTACKS = ("fgsm", "gap", "deepfool", "cw")
COLUMNS = (("attack", "attacker"), ("n_adversarial", "adv. images"), ("labels", "labels"),
           ("accuracy_original_before", "acc. original before"), ("accuracy_original", "acc. original after"),
           ("accuracy_adversarial_before", "acc. adversarial before"),
           ("accuracy_adversarial", "acc. adversarial after"), ("fooling_ratio_before", "fooling ratio before"),
           ("fooling_ratio_after", "after, re-attacked"), ("fooling_ratio_after_transfer", "after, old adv. images"),
           ("detected_after", "detected (re-attacked)"), ("labeler_accuracy", "labeler acc."),
           ("n_fooling", "fooling images"), ("fooling_classes", "new classes"))

DESCRIPTION = """\
Retrain a classifier on its training images plus adversarial images labelled by a PCA + k-NN labeler, then
attack it again; one table row per --n-adversarial value and --labels choice.

MNIST: train = the first --n-train training images, test = the first --n-test test images, model mnist:lenet
(the cached trained LeNet) unless --model says otherwise. CIFAR-10: the same from cifar10:DIR's train and test
batches; a model without weights (default: a width-16 ResNet18Cifar) is first trained --train-epochs epochs
on the training images.

examples:
  robustkit retrain --data mnist --attack fgsm --eps 0.07 --n-adversarial 3000 1500 --epochs 1 \\
                    --pca-dim 50 --labels labeler source --out runs/retrain
  robustkit retrain --data cifar10:DIR --attack gap --eps 10/255 --n-train 10000 --n-test 300 \\
                    --n-adversarial 2000 --pca-dim 300 --out runs/retrain-cifar
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("retrain", help="retrain a classifier on labelled adversarial images and re-attack it",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    pos = options.positive_int
    p.add_argument("--data", default="mnist", help="mnist | cifar10:DIR (default: mnist)")
    options.add_model(p, required=False, help="mnist:<arch> or pkg.module:Factory[@weights.pt] (default: "
                      "mnist:lenet, or robustkit.models:ResNet18Cifar with width 16 for cifar10)",
                      weights_help="state dict for --model")
    p.add_argument("--train-epochs", type=pos, default=3, help="epochs to train a model that has no weights")
    p.add_argument("--attack", default="fgsm", choices=ATTACKS, help="the attacker (default: fgsm)")
    p.add_argument("--eps", default=None, help="L-inf budget for fgsm / gap, e.g. 0.07 or 10/255 (default: 0.07 "
                   "for fgsm; for gap 0.2 on mnist, 10/255 on cifar10)")
    p.add_argument("--gap-epochs", type=pos, default=4, help="GAP generator training epochs (default: 4)")
    p.add_argument("--gap-fit", type=pos, default=2000, help="training images the GAP generator is trained on")
    p.add_argument("--gap-loss", default="prediction", choices=("prediction", "least_likely"),
                   help="GAP's training loss (default: prediction)")
    p.add_argument("--n-adversarial", type=pos, nargs="+", default=[1000],
                   help="adversarial training images; one row per value (default: 1000)")
    p.add_argument("--n-train", type=pos, default=None, help="training images (default: all)")
    p.add_argument("--n-original", type=pos, default=None,
                   help="original training images in the retraining set (default: all --n-train)")
    p.add_argument("--n-test", type=pos, default=500, help="test images (default: 500)")
    p.add_argument("--epochs", type=pos, default=1, help="retraining epochs (default: 1)")
    p.add_argument("--lr", type=float, default=5e-4, help="retraining learning rate (default: 5e-4)")
    p.add_argument("--pca-dim", type=pos, default=None, help="labeler PCA dims (default: 50 mnist, 300 cifar10)")
    p.add_argument("--labels", nargs="+", default=["labeler"], choices=("labeler", "source"),
                   help="labels of the adversarial images: the labeler's, or their source images' (default: labeler)")
    p.add_argument("--fooling", default="new_class", choices=("new_class", "drop"),
                   help="images the labeler calls fooling: a new output class, or left out (default: new_class)")
    p.add_argument("--fooling-threshold", default="none",
                   help="distance beyond which an image is a fooling image: none | auto | a number (default: none)")
    p.add_argument("--fooling-clusters", type=pos, default=1, help="fooling classes to cluster into (default: 1)")
    options.add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, training and attacks (default: 0)")
    p.add_argument("--out", required=True, help="directory for retraining.json and retraining.md")


def _threshold(text: str):
    from robustkit.cli.specs import SpecError
    threshold = text.lower()
    if threshold in ("none", "auto"):
        return None if threshold == "none" else "auto"
    try:
        return float(threshold)
    except ValueError:
        raise SpecError(f"--fooling-threshold: none, auto or a number, got {text!r}") from None


def run(args) -> int:
    import torch

    from robustkit.cli.specs import SpecError, make_data, parse_eps
    from robustkit.defenses import KNNLabeler, Retrainer
    from robustkit.defenses.retrain import count_outputs
    from robustkit.eval.storage import dumps, write_atomic

    out = options.check_out(args.out)
    device = options.resolve_device(args.device)
    torch.manual_seed(args.seed)
    threshold = _threshold(args.fooling_threshold)
    kind = args.data.partition(":")[0]
    if kind not in ("mnist", "cifar10"):
        raise SpecError(f"--data: expected mnist or cifar10:DIR, got {args.data!r}")
    train, test = _tensors(make_data(args.data, split="train"), args.n_train), _tensors(
        make_data(args.data, split="test"), args.n_test)
    model = _model(args, kind, train, device).to(device).eval()
    eps = parse_eps(args.eps)[0] if args.eps else {"fgsm": 0.07, "gap": 0.2 if kind == "mnist" else 10 / 255}.get(
        args.attack)
    factory = _attack_factory(args, eps, train[0], device)
    pca_dim = args.pca_dim or (50 if kind == "mnist" else 300)
    labeler = KNNLabeler(pca_dim=pca_dim, fooling_threshold=threshold, fooling_clusters=args.fooling_clusters)
    n_original = args.n_original or train[0].shape[0]
    original = (train[0][:n_original], train[1][:n_original])
    labeler.fit(*original, num_classes=count_outputs(model, test[0][:1], device))
    rows = []
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
    write_atomic(out / "retraining.json", lambda tmp: tmp.write_text(dumps({"config": config, "rows": rows}, indent=2)
                                                                     + "\n"))
    write_atomic(out / "retraining.md", lambda tmp: tmp.write_text(markdown_table(rows) + "\n"))
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


def _tensors(dataset, n):
    x, y = dataset.tensors
    return x[:n], y[:n]


def _model(args, kind, train, device):
    import torch

    from robustkit.cli.specs import has_weights, make_model
    from robustkit.training import train_classifier
    spec = args.model or ("mnist:lenet" if kind == "mnist" else "robustkit.models:ResNet18Cifar")
    model_args = args.model_args or (None if args.model else ('{"width": 16}' if kind != "mnist" else None))
    model = make_model(spec, weights=args.weights, model_args=model_args)
    if not has_weights(spec, args.weights):
        print(f"robustkit retrain: {spec} has no --weights: training it {args.train_epochs} epochs on "
              f"{train[0].shape[0]} training images first")
        model = train_classifier(model, torch.utils.data.TensorDataset(*train), epochs=args.train_epochs,
                                 lr=1e-3, batch_size=128, seed=args.seed, device=device, progress=False)
    return model


def _attack_factory(args, eps, x_train, device):
    from robustkit import attacks
    if args.attack == "fgsm":
        return lambda m: attacks.FGSM(m, eps=eps)
    if args.attack == "gap":
        batches = [x_train[i:i + 64] for i in range(0, min(args.gap_fit, x_train.shape[0]), 64)]
        return lambda m: attacks.GAP(m, eps=eps, loss=args.gap_loss, width=16, blocks=3, seed=args.seed).fit(
            [b.to(device) for b in batches], epochs=args.gap_epochs, lr=2e-3, progress=False)
    if args.attack == "deepfool":
        return lambda m: attacks.DeepFool(m, steps=50)
    import functools
    # the seed's C&W L2 toward the least-likely class, at a budget a CPU can run (3 x 100 Adam steps)
    return lambda m: functools.partial(attacks.CW(m, binary_search_steps=3, steps=100, lr=0.05, initial_const=1.0),
                                       target="least_likely")
