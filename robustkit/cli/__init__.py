"""The ``robustkit`` command (also ``python -m robustkit``).

    robustkit demo [--out DIR] [--fast]
    robustkit eval --model pkg.module:Factory --weights W.pt --data mnist|cifar10:DIR|imagenet:DIR \\
                   --attack pgd [--attack fgsm ...] --eps 8/255 --steps 10 --limit N --batch-size B \\
                   --device cpu|cuda --out DIR [--resume]
    robustkit transfer --sources a,b+c --targets d,e --data mnist --attack mifgsm --out DIR
    robustkit report DIR
    robustkit retrain --data mnist|cifar10:DIR --attack fgsm|gap|deepfool|cw --n-adversarial N [N ...] \\
                      --epochs E --pca-dim D --labels labeler|source --out DIR

Each subcommand is a module of this package with ``add_parser(subparsers)`` and ``run(args)``; a new command
adds one entry to :data:`COMMANDS`. Parsing imports nothing heavy (torch is imported by ``run``), so ``--help``
answers at once. Under ``torchrun --nproc-per-node N -m robustkit eval ...`` the evaluation is sharded over the
processes. A user error (bad model string, missing data, mismatched weights, unknown attack, a full disk)
prints one line and exits with status 2; set ``ROBUSTKIT_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

#: The subcommands, in the order ``--help`` lists them: modules ``robustkit.cli.<name>`` (``-`` spelt ``_``).
COMMANDS = ("demo", "eval", "transfer", "report", "retrain", "train", "train-denoiser", "reproduce")


def _command(name: str):
    return importlib.import_module(f"robustkit.cli.{name.replace('-', '_')}")   # train-denoiser: train_denoiser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustkit", description="Adversarial robustness evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        _command(name).add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from robustkit.cli.specs import SpecError
        try:
            return _command(args.command).run(args)
        except (SpecError, OSError, ValueError, TypeError) as error:
            if os.environ.get("ROBUSTKIT_DEBUG"):
                raise
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"robustkit {args.command}: error: {message}", file=sys.stderr)
            return 2
    finally:
        if "robustkit.eval.distributed" in sys.modules:
            sys.modules["robustkit.eval.distributed"].shutdown()


__all__ = ["main", "build_parser", "COMMANDS"]
