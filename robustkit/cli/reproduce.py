"""``robustkit reproduce``: re-run a seed paper's headline tables and print ours beside the paper's numbers
(:mod:`robustkit.reproduce`)."""
from __future__ import annotations

import argparse
import sys

from robustkit.cli import options

DESCRIPTION = """\
Re-run one paper's protocol with robustkit and write tables.md (paper | ours | difference, one row per cell),
results.json (with the command, seed, versions, machine and wall time) and report.html (tables and plots) to
--out. Models are trained once and cached under $ROBUSTKIT_CACHE/reproduce (default ~/.cache/robustkit),
keyed by their recipe. A killed run continues with --resume.

examples:
  robustkit reproduce --list
  robustkit reproduce self-distillation                       # quick scale: minutes on a 2-core CPU
  robustkit reproduce retraining --scale full --out runs/retraining --device cuda
  robustkit reproduce retraining --out runs/retraining --resume # continue a killed run
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="re-run a seed paper's tables and compare with its numbers",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paper", nargs="?", help="the paper's short name (see --list)")
    p.add_argument("--list", action="store_true", help="list the papers and the tables each reproduces")
    p.add_argument("--scale", choices=("quick", "full"), default="quick",
                   help="quick: minutes on a 2-core CPU (default); full: the paper's documented protocol")
    p.add_argument("--out", default=None, help="run directory (default: runs/reproduce/<paper>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder holding cifar10/ and imagenet-sample/ for the tables that use them "
                        "(default: the bundled MNIST only)")
    options.add_device(p)
    p.add_argument("--seed", type=options.non_negative_int, default=0, help="seed of the run (default: 0)")


def print_list(papers) -> None:
    from robustkit.reproduce import PaperUnavailable
    for name in papers:
        try:
            paper = papers[name]
        except PaperUnavailable as error:
            print(f"{name}\n    (not available: {error})")
            continue
        print(f"{name}: {paper.title}")
        for table, description in paper.tables.items():
            print(f"    {table}: {description}")


def run(args) -> int:
    from robustkit.reproduce import PAPERS, run_paper
    if args.list:
        print_list(PAPERS)
        return 0
    if args.paper not in PAPERS:
        given = "no paper given" if args.paper is None else f"unknown paper {args.paper!r}"
        print(f"robustkit reproduce: error: {given}; choose one of: {', '.join(PAPERS)} "
              "(robustkit reproduce --list shows their tables)", file=sys.stderr)
        return 2
    out = options.check_out(args.out or f"runs/reproduce/{args.paper}")
    device = options.resolve_device(args.device)
    run_paper(args.paper, scale=args.scale, out=out, data_dir=args.data, device=device, seed=args.seed,
              resume=args.resume)
    print(f"tables: {out / 'tables.md'}; report: {out / 'report.html'}")
    return 0
