"""``robustkit report``: rewrite results.csv and report.html of a finished run."""
from __future__ import annotations

import json
import pathlib


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="rewrite results.csv and report.html of a finished run")
    p.add_argument("out", help="the run's output directory (holds results.json)")


def run(args) -> int:
    from robustkit.cli.specs import SpecError
    from robustkit.eval.report import headline_text, write_report
    if not (pathlib.Path(args.out) / "results.json").is_file():
        raise SpecError(f"out: no results.json in {args.out!r}")
    path = write_report(args.out)
    print("\n".join(headline_text(json.loads((pathlib.Path(args.out) / "results.json").read_text()))))
    print(f"report: {path}")
    return 0
