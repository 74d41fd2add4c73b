"""Times ``robustkit reproduce retraining``: the retraining seed's protocol (Thakur, Ding and Li; Tables 1,
3, 4, 5, 7 and the fooling class), which lives in ``robustkit/reproduce/retraining.py``; this script only
runs it, clocks it and files its cells. MNIST always; CIFAR-10 too with --data DIR holding cifar10/.

    python bench/retraining.py                              # full scale (docs/retraining.md's MNIST settings)
    python bench/retraining.py --scale quick
    python bench/retraining.py --data ../shared/data --n-test 300 --n-original 2000 --cw-budget 2 50
    python bench/retraining.py --tiny                       # checks the script: 2,000 training images, n of 20-200

Writes bench/results/<machine label>/reproduce_retraining.json (wall and CPU seconds, settings, every cell).
The run directory is --out, a fresh temporary folder by default.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import harness
from robustkit.reproduce import run_paper

TINY = {"train_images": 2000, "test_images": 50, "label_images": 20, "original_images": 200, "ratios": [1.0, 0.25],
        "whitebox_images": 20, "cw_searches": 1, "cw_steps": 10, "gap_fit": 128, "gap_epochs": 1,
        "fooling_images": 50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("quick", "full"), default="full")
    parser.add_argument("--data", default=None, help="folder holding cifar10/ (adds the CIFAR-10 rows)")
    parser.add_argument("--n-test", type=int, default=None, help="test images")
    parser.add_argument("--n-train", type=int, default=None, help="CIFAR-10 training images of the CNN")
    parser.add_argument("--n-label", type=int, default=None, help="images per attacker for the label accuracy")
    parser.add_argument("--n-original", type=int, default=None, help="original images in the retraining set")
    parser.add_argument("--n-whitebox", type=int, default=None, help="adversarial images for DeepFool and C&W")
    parser.add_argument("--cw-budget", type=int, nargs=2, default=None, metavar=("SEARCHES", "STEPS"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run directory (default: a fresh temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="checks the script on a tiny setting")
    harness.add_arguments(parser, threads=1, clock="wall")
    args = parser.parse_args()
    harness.apply_arguments(args)
    limit = dict(TINY) if args.tiny else {}
    given = {"test_images": args.n_test, "cifar_train_images": args.n_train, "label_images": args.n_label,
             "original_images": args.n_original, "whitebox_images": args.n_whitebox}
    limit.update({k: v for k, v in given.items() if v is not None})
    if args.cw_budget:
        limit.update(cw_searches=args.cw_budget[0], cw_steps=args.cw_budget[1])
    out = args.out or tempfile.mkdtemp(prefix="reproduce-retraining-")
    wall, cpu = time.perf_counter(), time.process_time()
    run_paper("retraining", scale=args.scale, out=out, data_dir=args.data, seed=args.seed, limit=limit or None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results = json.loads((pathlib.Path(out) / "results.json").read_text())
    print(f"{wall:.0f} s wall, {cpu:.0f} s CPU; tables in {out}/tables.md")
    harness.Result("reproduce_retraining" + ("-tiny" if args.tiny else ""), rows=results["cells"],
                   notes={"scale": args.scale, "limit": limit, "settings": results["settings"], "out": out,
                          "data": args.data, "wall_seconds": wall, "cpu_seconds": cpu}).write()


if __name__ == "__main__":
    main()
