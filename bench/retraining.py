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

import harness

TINY = {"train_images": 2000, "test_images": 50, "label_images": 20, "original_images": 200, "ratios": [1.0, 0.25],
        "whitebox_images": 20, "cw_searches": 1, "cw_steps": 10, "gap_fit": 128, "gap_epochs": 1,
        "fooling_images": 50}


def main() -> None:
    parser = harness.reproduce_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder holding cifar10/ (adds the CIFAR-10 rows)")
    parser.add_argument("--n-test", type=int, default=None, help="test images")
    parser.add_argument("--n-train", type=int, default=None, help="CIFAR-10 training images of the CNN")
    parser.add_argument("--n-label", type=int, default=None, help="images per attacker for the label accuracy")
    parser.add_argument("--n-original", type=int, default=None, help="original images in the retraining set")
    parser.add_argument("--n-whitebox", type=int, default=None, help="adversarial images for DeepFool and C&W")
    parser.add_argument("--cw-budget", type=int, nargs=2, default=None, metavar=("SEARCHES", "STEPS"))
    args = harness.parse_arguments(parser, threads=1, clock="wall")
    limit = dict(TINY) if args.tiny else {}
    given = {"test_images": args.n_test, "cifar_train_images": args.n_train, "label_images": args.n_label,
             "original_images": args.n_original, "whitebox_images": args.n_whitebox}
    limit.update({k: v for k, v in given.items() if v is not None})
    if args.cw_budget:
        limit.update(cw_searches=args.cw_budget[0], cw_steps=args.cw_budget[1])
    harness.time_reproduce("retraining", args, limit, data_dir=args.data)


if __name__ == "__main__":
    main()
