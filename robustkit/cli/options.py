"""Options and output shared by the commands (model, device, attack and output options; the eval tables).

Argument parsing here imports nothing heavy; the helpers that need torch import it when called.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import List

from robustkit.cli.specs import ATTACK_NAMES, TARGETS, SpecError, parse_eps

TABLE_COLUMNS = (("eps", "eps"), ("steps", "steps"), ("clean_accuracy", "clean"), ("robust_accuracy", "robust"),
                 ("attack_success_rate", "success"), ("l2_median", "median L2"), ("rho2", "rho2"),
                 ("images_per_second", "img/s"))


def int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (argparse names the option in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"int >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def add_model(p: argparse.ArgumentParser, *, help: str, weights_help: str | None = None,
              required: bool = True) -> None:
    """``--model`` (a model spec, see ``specs.make_model``), ``--weights`` when the command loads a state dict
    (``weights_help``; omitted otherwise) and ``--model-args``, with one meaning in every command."""
    p.add_argument("--model", required=required, default=None, help=help)
    if weights_help is not None:
        p.add_argument("--weights", default=None, help=weights_help)
    p.add_argument("--model-args", default=None, help="JSON keyword arguments for the factory")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


def add_common(p: argparse.ArgumentParser, *, attack_help: str = "attack name; repeat for a suite") -> None:
    """The options of every command that runs attacks over a data set."""
    p.add_argument("--data", default="mnist", help="mnist | cifar10:DIR | imagenet:DIR (default: mnist)")
    p.add_argument("--attack", action="append", choices=ATTACK_NAMES, metavar="NAME",
                   help=f"{attack_help}: {', '.join(ATTACK_NAMES)}")
    p.add_argument("--eps", default=None, help="budget of the fixed-budget attacks, e.g. 0.3 or 8/255 (default: "
                   "0.3 for mnist, 8/255 otherwise); a comma list sweeps, one run per value")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="iterations of the iterative attacks (default: each attack's own; fgsm takes one step)")
    p.add_argument("--target", default=None, choices=TARGETS,
                   help="run the attacks targeted, toward the least likely or a random other class "
                        "(default: untargeted)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate at most N images")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per batch (default: 100)")
    add_device(p)
    p.add_argument("--out", required=True, help="output directory (records, results.json, report)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' randomness (default: 0)")
    p.add_argument("--only-correct", action="store_true", help="keep images every model classifies correctly")
    p.add_argument("--per-class", type=positive_int, default=None, help="at most N images per class")
    p.add_argument("--image-size", type=positive_int, default=None, help="ImageNet crop size (default 224)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--no-report", action="store_true", help="skip report.html and the plots")


def resolve_device(text: str):
    """``--device`` as a ``torch.device``, refused with a clear message when unknown or not available."""
    import torch
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise SpecError(f"--device: unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(f"--device: {text!r} requested but CUDA is not available here "
                            f"(torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecError(f"--device: {text!r} does not exist; this machine has {torch.cuda.device_count()} "
                            "CUDA device(s)")
    elif device.type != "cpu":
        raise SpecError(f"--device: {text!r} is not supported; use cpu, cuda or cuda:N")
    return device


def check_out(path: str, argument: str = "--out") -> pathlib.Path:
    """``--out`` as a path that is, or can become, a directory."""
    out = pathlib.Path(path)
    if out.exists() and not out.is_dir():
        raise SpecError(f"{argument}: {path!r} is a file, not a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SpecError(f"{argument}: {path!r} lies under {str(parent)!r}, which is a file")
            break
    return out


def eps_from_args(args) -> List[float]:
    if args.eps is not None:
        return parse_eps(args.eps)
    return [0.3] if args.data.startswith("mnist") else [8 / 255]


def is_rank0() -> bool:
    from robustkit.eval.distributed import rank_and_world
    return rank_and_world()[0] == 0


def fmt(value) -> str:
    from robustkit.eval.report import fmt as report_fmt
    return report_fmt(value)


def format_table(results: dict) -> str:
    """The summary table the CLI prints, every number taken from ``results``."""
    from robustkit.eval.report import summary_rows
    rows = summary_rows(results)
    width = max([len("attack")] + [len(str(r["attack"])) for r in rows]) + 2
    lines = ["attack".ljust(width) + "".join(title.rjust(11) for _, title in TABLE_COLUMNS)]
    for row in rows:
        if row.get("attack_type") == "minimal_norm":
            # a minimal-norm attack succeeds on (nearly) every image by design: its robust accuracy says nothing,
            # its norms do (the headline under the table counts fixed-budget attacks only)
            row = {**row, "robust_accuracy": None}
        lines.append(str(row["attack"]).ljust(width) + "".join(fmt(row.get(k)).rjust(11) for k, _ in TABLE_COLUMNS))
    return "\n".join(lines)


def print_summary(results: dict, out) -> None:
    if not is_rank0():
        return
    from robustkit.eval.report import headline_text
    print(format_table(results))
    print("\n".join(headline_text(results)))
    out = pathlib.Path(out)
    report = out / "report.html"
    print(f"results: {out / 'results.json'}" + (f"; report: {report}" if report.exists() else ""))


def warn(command: str, message: str) -> None:
    print(f"robustkit {command}: {message}", file=sys.stderr)
