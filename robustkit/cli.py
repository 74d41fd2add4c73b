"""The ``robustkit`` command (also ``python -m robustkit``).

    robustkit demo [--out DIR] [--fast]
    robustkit eval --model pkg.module:Factory --weights W.pt --data mnist|cifar10:DIR|imagenet:DIR \\
                   --attack pgd [--attack fgsm ...] --eps 8/255 --steps 10 --limit N --batch-size B \\
                   --device cpu|cuda --out DIR [--resume]
    robustkit transfer --sources a,b+c --targets d,e --data mnist --attack mifgsm --out DIR
    robustkit report DIR
    robustkit retrain --data mnist|cifar10:DIR --attack fgsm|gap|deepfool|cw --n-adversarial N [N ...] \
                      --epochs E --pca-dim D --labels labeler|source --out DIR

Under ``torchrun --nproc-per-node N -m robustkit eval ...`` the evaluation is sharded over the processes.
A user error (bad model string, missing data, mismatched weights, unknown attack) prints one line and exits
with status 2; set ``ROBUSTKIT_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
from typing import List, Optional, Sequence

from robustkit.eval.suite import SpecError

DEMO_ATTACKS = ("fgsm", "pgd", "mifgsm", "dmifgsm", "deepfool", "cw")
DEMO_EPS = 0.1
DEMO_FGSM_SWEEP = (0.05, 0.1, 0.2, 0.3)
TABLE_COLUMNS = (("clean_accuracy", "clean"), ("robust_accuracy", "robust"), ("attack_success_rate", "success"),
                 ("l2_median", "median L2"), ("rho2", "rho2"), ("images_per_second", "img/s"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustkit", description="Adversarial robustness evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train (or load) a LeNet on MNIST, attack it, write a report")
    demo.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    demo.add_argument("--fast", action="store_true", help="small model, 100 images, few steps (seconds)")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", default="mnist", help="mnist | cifar10:DIR | imagenet:DIR (default: mnist)")
        p.add_argument("--attack", action="append", help="attack name; repeat for a suite")
        p.add_argument("--eps", default=None, help="budget, e.g. 0.3 or 8/255 (default: 0.3 for mnist, 8/255 "
                       "otherwise); a comma list sweeps")
        p.add_argument("--steps", type=int, default=None)
        p.add_argument("--limit", type=int, default=None, help="evaluate at most N images")
        p.add_argument("--batch-size", type=int, default=100)
        p.add_argument("--device", default="cpu")
        p.add_argument("--out", required=True)
        p.add_argument("--resume", action="store_true", help="continue the run in --out")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--only-correct", action="store_true", help="keep images every model classifies correctly")
        p.add_argument("--per-class", type=int, default=None, help="at most N images per class")
        p.add_argument("--image-size", type=int, default=None, help="ImageNet crop size (default 224)")
        p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
        p.add_argument("--no-report", action="store_true", help="skip report.html and the plots")

    ev = sub.add_parser("eval", help="evaluate one model against a suite of attacks")
    ev.add_argument("--model", required=True, help="pkg.module:Factory, mnist:<arch>, or a+b (ensemble)")
    ev.add_argument("--weights", default=None, help="state dict file, loaded with torch.load(weights_only=True)")
    ev.add_argument("--model-args", default=None, help="JSON keyword arguments for the factory")
    common(ev)

    tr = sub.add_parser("transfer", help="transfer matrix: attacks crafted on sources, evaluated on targets")
    tr.add_argument("--sources", required=True, help="comma-separated model specs; a+b is an ensemble")
    tr.add_argument("--targets", required=True, help="comma-separated model specs")
    common(tr)

    rep = sub.add_parser("report", help="rewrite results.csv and report.html of a finished run")
    rep.add_argument("out")

    from robustkit.defenses import retrain_command
    retrain_command.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"demo": _demo, "eval": _eval, "transfer": _transfer, "report": _report,
                "retrain": _retrain}[args.command](args)
    except (SpecError, FileExistsError, FileNotFoundError, ValueError, TypeError) as error:
        if os.environ.get("ROBUSTKIT_DEBUG"):
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"robustkit {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        from robustkit.eval.distributed import shutdown
        shutdown()


# ---- commands ---------------------------------------------------------------------------------------------

def _eval(args) -> int:
    import torch

    from robustkit.eval import distributed, evaluate, suite
    device = distributed.init_from_env(args.device)
    torch.manual_seed(args.seed)   # a model without --weights gets the same random weights on every rank
    model = suite.make_model(args.model, weights=args.weights, model_args=args.model_args).to(device)
    data = suite.make_data(args.data, image_size=args.image_size)
    attacks = suite.make_attacks(args.attack or ["pgd"], suite.members(model), _eps(args), args.steps)
    if args.weights is None and "@" not in args.model and not args.model.startswith("mnist:") and _is_rank0():
        print(f"robustkit eval: no --weights: {args.model} keeps its initial weights (seed {args.seed})",
              file=sys.stderr)
    results = evaluate(model, data, attacks, out=args.out, limit=args.limit, batch_size=args.batch_size,
                       device=device, resume=args.resume, seed=args.seed, only_correct=args.only_correct,
                       per_class=args.per_class, num_workers=args.workers, report=not args.no_report,
                       model_name=args.model)
    _print_summary(results, args.out)
    return 0


def _transfer(args) -> int:
    import torch

    from robustkit.eval import distributed, suite
    from robustkit.eval.transfer import run_transfer
    device = distributed.init_from_env(args.device)
    torch.manual_seed(args.seed)   # models without weights get the same random weights on every rank
    sources = {s: suite.make_model(s).to(device) for s in args.sources.split(",") if s}
    targets = {t: suite.make_model(t).to(device) for t in args.targets.split(",") if t}
    if len(args.attack or []) > 1:
        raise SpecError("--attack: transfer takes one attack")
    eps = _eps(args)
    if len(eps) > 1:
        raise SpecError("--eps: transfer takes one budget")
    matrix = run_transfer(sources, targets, suite.make_data(args.data, image_size=args.image_size),
                          lambda models: next(iter(suite.make_attacks((args.attack or ["mifgsm"])[:1], models, eps,
                                                                      args.steps).values())),
                          out=args.out, limit=args.limit, batch_size=args.batch_size, device=device,
                          resume=args.resume, seed=args.seed, only_correct=args.only_correct,
                          per_class=args.per_class)
    if _is_rank0():
        width = max(len(s) for s in matrix["sources"]) + 2
        print("source \\ target".ljust(width) + "".join(t.rjust(14) for t in matrix["targets"]))
        for source, row in zip(matrix["sources"], matrix["matrix"]):
            print(source.ljust(width) + "".join(_fmt(v).rjust(14) for v in row))
        print(f"transfer matrix: {pathlib.Path(args.out) / 'transfer.json'}")
    return 0


def _retrain(args) -> int:
    from robustkit.defenses import retrain_command
    return retrain_command.run(args)


def _report(args) -> int:
    from robustkit.eval.report import write_report
    if not (pathlib.Path(args.out) / "results.json").is_file():
        raise SpecError(f"out: no results.json in {args.out!r}")
    print(f"report: {write_report(args.out)}")
    return 0


def _demo(args) -> int:
    import torch

    from robustkit.datasets import mnist
    from robustkit.eval import evaluate, suite
    out = pathlib.Path(args.out)
    if not args.resume:
        for stale in ("records", "run.json", "results.json", "examples.pt"):
            path = out / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    model = _demo_model(args.fast).to(args.device)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    steps = 5 if args.fast else None           # None: each attack's own default
    names = [n for n in DEMO_ATTACKS if n in suite.available_attacks()]
    attacks = {}
    for name in names:
        # DeepFool stops each image as soon as it crosses the boundary: its own step budget costs little
        attack_steps = {"deepfool": None, "cw": 20 if args.fast else None}.get(name, steps)
        # FGSM at several budgets draws the accuracy-vs-eps curve of a fixed-budget attack (one run per eps)
        eps = list(DEMO_FGSM_SWEEP) if name == "fgsm" else [DEMO_EPS]
        attacks.update(suite.make_attacks([name], [model], eps, attack_steps))
    missing = sorted(set(DEMO_ATTACKS) - set(names))
    if missing:
        print(f"robustkit demo: not in this build yet, skipped: {', '.join(missing)}")
    results = evaluate(model, mnist("test"), attacks, out=out, limit=100 if args.fast else 1000,
                       batch_size=100 if args.fast else 250, device=args.device, resume=True,
                       model_name="lenet", examples=8)
    print(f"LeNet on MNIST test, L-inf eps = {DEMO_EPS} for the fixed-budget attacks (FGSM also at "
          f"{', '.join(map(str, DEMO_FGSM_SWEEP))}); model: {out / 'model.pt'}")
    _print_summary(results, out)
    return 0


def _demo_model(fast: bool):
    """The full demo loads (or trains once, about a minute on 2 cores) the cached LeNet of
    ``trained_mnist_model``; ``--fast`` trains a LeNet on the first 6,000 training images (cached too)."""
    import torch

    from robustkit.datasets import ImageTensorDataset, mnist
    from robustkit.models import LeNet
    from robustkit.models.train import MNIST_RECIPES, default_cache_dir, train_classifier, trained_mnist_model
    if not fast:
        return trained_mnist_model("lenet")
    from robustkit import __version__
    path = default_cache_dir() / f"demo-fast-lenet-6000-v{__version__}.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LeNet()
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    train = mnist("train")
    subset = ImageTensorDataset(train.pixels[:6000], train.labels[:6000], train.classes)
    model = train_classifier(model, subset, epochs=1, seed=0, **MNIST_RECIPES["lenet"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model.eval()


# ---- helpers ------------------------------------------------------------------------------------------------

def _eps(args) -> List[float]:
    from robustkit.eval.suite import parse_eps
    if args.eps is not None:
        return parse_eps(args.eps)
    return [0.3] if args.data.startswith("mnist") else [8 / 255]


def _is_rank0() -> bool:
    from robustkit.eval.distributed import rank_and_world
    return rank_and_world()[0] == 0


def _fmt(value) -> str:
    from robustkit.eval.report import fmt
    return fmt(value)


def format_table(results: dict) -> str:
    """The summary table the CLI prints, every number taken from ``results``."""
    from robustkit.eval.report import summary_rows
    rows = summary_rows(results)
    width = max([len("attack")] + [len(str(r["attack"])) for r in rows]) + 2
    lines = ["attack".ljust(width) + "".join(title.rjust(11) for _, title in TABLE_COLUMNS)]
    for row in rows:
        lines.append(str(row["attack"]).ljust(width) + "".join(_fmt(row.get(k)).rjust(11) for k, _ in TABLE_COLUMNS))
    return "\n".join(lines)


def _print_summary(results: dict, out) -> None:
    if not _is_rank0():
        return
    print(format_table(results))
    out = pathlib.Path(out)
    report = out / "report.html"
    print(f"results: {out / 'results.json'}" + (f"; report: {report}" if report.exists() else ""))


if __name__ == "__main__":
    raise SystemExit(main())
