"""``robustkit train``: adversarial (or clean) training of a model with ``robustkit.training.fit``.

    robustkit train --model robustkit.models:LeNet --data mnist --defense madry --eps 0.3 --epochs 5 \\
                    --out runs/lenet-madry [--resume] [--limit N]

Writes ``model.pt`` (the state dict, readable by ``robustkit eval --weights``), ``checkpoint.pt`` and
``history.json`` after every epoch (``--resume`` continues from them) and ``history.png``. Under
``torchrun --nproc-per-node N -m robustkit train ...`` the batches are split over the processes and rank 0 writes.
"""
from __future__ import annotations

import os
import pathlib

from robustkit.cli import options, train_defenses
from robustkit.cli.specs import SpecError, parse_eps

DEFENSES = ("madry", "goodfellow", "fast", "free", "trades", "clean") + train_defenses.DEFENSES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model, adversarially or not",
                              description="Train --model on the --data train split with one of the adversarial "
                                          "training defenses; checkpoints every epoch in --out (continue with "
                                          "--resume) and writes model.pt for robustkit eval --weights.")
    options.add_model(p, help="pkg.module:Factory[@weights.pt] (weights: start from them)")
    p.add_argument("--data", default="mnist", help="mnist | cifar10:DIR (default: mnist)")
    p.add_argument("--defense", choices=DEFENSES, default="madry",
                   help="madry: PGD examples only; goodfellow: 0.5 clean + 0.5 FGSM; fast: FGSM from a random start "
                        "(Wong et al.); free: replayed batches (Shafahi et al.); trades: TRADES; clean: no attack; "
                        + train_defenses.HELP)
    p.add_argument("--eps", default=None, help="L-inf budget, e.g. 0.3 or 8/255 (default: 0.3 for mnist, else 8/255)")
    p.add_argument("--steps", type=options.positive_int, default=None,
                   help="attack steps of madry (default 40 on mnist, else 10) and trades (default 10)")
    p.add_argument("--step-size", default=None, help="attack step (default: madry 2.5 eps / steps, fast 1.25 eps, "
                   "free eps, trades eps / 4)")
    p.add_argument("--eps-warmup", type=float, default=0.0,
                   help="fraction of training over which eps and the step ramp up from 0 (madry, goodfellow, fast, "
                        "trades; default 0). Madry at eps 0.3 on MNIST can stay at chance without it")
    p.add_argument("--replays", type=options.positive_int, default=4, help="free: replays per batch (default 4)")
    p.add_argument("--beta", type=float, default=6.0, help="trades: weight of the KL term (default 6)")
    p.add_argument("--epochs", type=options.positive_int, default=5, help="passes over the training data (default 5)")
    p.add_argument("--batch-size", type=options.positive_int, default=128, help="global batch (default 128)")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam", help="default adam")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--momentum", type=float, default=0.9, help="sgd momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="default 0")
    p.add_argument("--schedule", choices=("constant", "cosine", "piecewise", "cyclic"), default="constant",
                   help="learning-rate schedule per step (cyclic: Wong et al.; default constant)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the forward passes")
    p.add_argument("--limit", type=options.positive_int, default=None, help="train on the first N images")
    p.add_argument("--eval-limit", type=options.positive_int, default=1000,
                   help="test images for the per-epoch clean and PGD accuracy (default 1000)")
    p.add_argument("--eval-steps", type=options.positive_int, default=20, help="PGD steps of the per-epoch check")
    p.add_argument("--seed", type=int, default=0, help="seeds the run and the data order (default 0)")
    options.add_device(p)
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json, history.png, model.pt")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    train_defenses.add_arguments(p)


def _number(text, argument: str):
    return None if text is None else parse_eps(text, argument)[0]


def make_objective(args, model, eps: float):
    import robustkit as rk
    step_size = _number(args.step_size, "--step-size")
    if args.defense == "madry":
        steps = args.steps or (40 if args.data.startswith("mnist") else 10)
        attack = rk.attacks.PGD(model, eps=eps, step_size=step_size or 2.5 * eps / steps, steps=steps)
        return rk.defenses.AdversarialTraining(attack, clean_weight=0.0)
    if args.defense == "goodfellow":
        return rk.defenses.AdversarialTraining(rk.attacks.FGSM(model, eps=eps), clean_weight=0.5)
    if args.defense == "fast":
        return rk.defenses.FastAdversarialTraining(eps=eps, step_size=step_size)
    if args.defense == "free":
        return rk.defenses.FreeAdversarialTraining(eps=eps, replays=args.replays, step_size=step_size)
    if args.defense == "trades":
        return rk.defenses.TRADES(attack_steps=args.steps or 10, beta=args.beta, eps=eps,
                                  step_size=step_size or eps / 4)
    return None


def _device(text: str):
    """``--device``; under torchrun on CUDA each process takes the GPU of its local rank."""
    import torch
    device = options.resolve_device(text)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def plot_history(history, path: pathlib.Path) -> None:
    """Loss and accuracies per epoch, one figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = history.column("epoch")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, history.column("train_loss"), marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in (("train_accuracy", "train (attacked inputs)"), ("clean_accuracy", "test clean"),
                       ("robust_accuracy", "test PGD")):
        values = history.column(key)
        if any(v is not None for v in values):
            right.plot(epochs, values, marker="o", label=label)
    right.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    import torch
    from torch.utils.data import Subset

    import robustkit as rk
    from robustkit.cli import specs

    out = options.check_out(args.out)
    eps = _number(args.eps, "--eps") if args.eps is not None else (0.3 if args.data.startswith("mnist") else 8 / 255)
    if args.data.startswith("imagenet"):
        raise SpecError("--data: training needs a train split: mnist or cifar10:DIR")
    device = _device(args.device)
    torch.manual_seed(args.seed)    # the initial weights: the same on every rank
    model = specs.make_model(args.model, model_args=args.model_args).to(device)
    train = specs.make_data(args.data, split="train")
    test = specs.make_data(args.data, split="test")
    if args.limit is not None:
        train = Subset(train, range(min(args.limit, len(train))))
    test = Subset(test, range(min(args.eval_limit, len(test))))
    objective, constraints = make_objective(args, model, eps), []
    if args.defense in train_defenses.DEFENSES:
        def new_model():
            return specs.make_model(args.model, model_args=args.model_args).to(device)

        def fit_teacher(teacher, teacher_objective):
            rk.training.fit(teacher, train, teacher_objective, epochs=args.epochs, batch_size=args.batch_size,
                            optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                            weight_decay=args.weight_decay, schedule=args.schedule, checkpoint_dir=out / "teacher",
                            resume=args.resume, seed=args.seed + 1, progress=not args.no_progress, device=device)

        objective, constraints = train_defenses.make(args, model, eps, pgd_steps=args.steps or 10,
                                                     step_size=_number(args.step_size, "--step-size"),
                                                     new_model=new_model, fit_teacher=fit_teacher)
    eval_attack = rk.attacks.PGD(model, eps=eps, step_size=2.5 * eps / args.eval_steps, steps=args.eval_steps)
    history = rk.training.fit(model, train, objective, epochs=args.epochs, batch_size=args.batch_size,
                              optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                              weight_decay=args.weight_decay, schedule=args.schedule, eval_data=test,
                              eval_attack=eval_attack, checkpoint_dir=out, resume=args.resume, amp=args.amp,
                              seed=args.seed, progress=not args.no_progress, device=device,
                              constraints=constraints, eps_warmup=args.eps_warmup)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model.pt")
        plot_history(history, out / "history.png")
        last = history[-1]
        print(f"train {args.defense}: {len(history)} epochs, clean {last['clean_accuracy']:.4f}, "
              f"PGD-{args.eval_steps} {last['robust_accuracy']:.4f} on {len(test)} test images"
              + (f"; {history.stopped}" if history.stopped else ""))
        print(f"wrote {out / 'model.pt'} (robustkit eval --model {args.model} --weights {out / 'model.pt'}), "
              f"{out / 'history.json'}, {out / 'history.png'}")
    return 0
