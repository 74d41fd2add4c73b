"""Times ``robustkit reproduce self-distillation``: the self-distillation seed's targeted transfer protocol
(Tables 1-3 and the Fig. 1 temperature sweep on the MNIST zoo), which lives in
``robustkit/reproduce/self_distillation.py``; this script only runs it, clocks it and files its cells.

    python bench/transfer_mnist.py                      # full scale: 300 images, eps 32/255 and 0.3
    python bench/transfer_mnist.py --scale quick        # the command's default scale
    python bench/transfer_mnist.py --images 500 --eps 0.3
    python bench/transfer_mnist.py --tiny               # checks the script: 300 training images, 8 images

The run directory (tables.md, results.json, report.html) is --out, a fresh temporary folder by default, so
the time is never that of a resumed run. Writes bench/results/<machine label>/reproduce_self_distillation.json
(wall and CPU seconds, settings, every cell).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import harness
from robustkit.reproduce import run_paper

TINY = {"train_images": 300, "test_images": 500, "images": 8, "temperatures": [1.0, 16.0], "steps": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("quick", "full"), default="full")
    parser.add_argument("--images", type=int, default=None, help="attacked images (default: the scale's)")
    parser.add_argument("--eps", type=float, nargs="+", default=None, help="budgets (default: the scale's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run directory (default: a fresh temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="checks the script on a tiny setting")
    harness.add_arguments(parser, threads=1, clock="wall")
    args = parser.parse_args()
    harness.apply_arguments(args)
    limit = dict(TINY) if args.tiny else {}
    limit.update({k: v for k, v in (("images", args.images), ("eps", args.eps)) if v is not None})
    out = args.out or tempfile.mkdtemp(prefix="reproduce-self-distillation-")
    wall, cpu = time.perf_counter(), time.process_time()
    run_paper("self-distillation", scale=args.scale, out=out, seed=args.seed, limit=limit or None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results = json.loads((pathlib.Path(out) / "results.json").read_text())
    print(f"{wall:.0f} s wall, {cpu:.0f} s CPU; tables in {out}/tables.md")
    harness.Result("reproduce_self_distillation" + ("-tiny" if args.tiny else ""), rows=results["cells"],
                   notes={"scale": args.scale, "limit": limit, "settings": results["settings"], "out": out,
                          "wall_seconds": wall, "cpu_seconds": cpu, "series": results["series"]}).write()


if __name__ == "__main__":
    main()
