"""Evaluation throughput: PGD-10 at eps = 4/255 through robustkit.eval.evaluate, in images per second.

Compared in the same run with
  * the model-only floor: per batch, ``steps`` x (forward + input gradient) of the bare model, the least
    any PGD implementation must spend (STYLE.md, item 20);
  * a plain loop of ``PGD.run`` over the same batches (what the runner adds: per-batch seeding, the clean
    forward, norms, JSON records, fsync).
Correctness first: the runner's adversarial predictions on a batch equal a direct ``PGD.run`` seeded as the
runner seeds it, and every perturbation respects eps.

The three run in rotating rounds (bench/harness.py, wall clock by default, the device synchronised around
each call); ``vs floor`` is the paired ratio (median over rounds of the floor's time over the method's).

    OMP_NUM_THREADS=1 python bench/eval_throughput.py --repeats 5     # CPU: ResNet-50 at 32 px, 8 images
    python bench/eval_throughput.py --tiny                            # LeNet, 8 images, 3 steps, 1 round
    python bench/eval_throughput.py --device cuda --image-size 224 --images 512 --batch-size 128
    # several GPUs: torchrun --nproc-per-node 8 -m robustkit eval --model robustkit.models:resnet50 \
    #     --data imagenet:DIR --attack pgd --eps 4/255 --steps 10 --device cuda --out DIR
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

import torch

import harness
from data import IMAGENET_SAMPLE as SAMPLE
from robustkit.attacks import PGD
from robustkit.eval import batch_seed, evaluate
from robustkit.models import LeNet, resnet50


def _data(args):
    """Real images when the model is an ImageNet one and the sample is present; otherwise seeded noise."""
    if args.model == "resnet50" and SAMPLE.is_dir():
        from robustkit.datasets import imagenet_folder
        data = imagenet_folder(SAMPLE / "val", classes_file=SAMPLE / "classes.txt", crop_size=args.image_size,
                               resize_size=max(args.image_size, args.image_size * 8 // 7))
        pairs = [data[i % len(data)] for i in range(args.images)]
        return torch.stack([p[0] for p in pairs]), torch.tensor([int(p[1]) for p in pairs])
    g = torch.Generator().manual_seed(0)
    channels, classes = (3, 1000) if args.model == "resnet50" else (1, 10)
    return (torch.rand(args.images, channels, args.image_size, args.image_size, generator=g),
            torch.randint(0, classes, (args.images,), generator=g))


def _model(args):
    torch.manual_seed(0)
    return (resnet50() if args.model == "resnet50" else LeNet()).eval().to(args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("resnet50", "lenet"), default="resnet50")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps", type=float, default=4 / 255)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds")
    parser.add_argument("--tiny", action="store_true", help="LeNet at 28 px, 8 images, 3 steps, 1 round")
    harness.add_arguments(parser, threads=None, clock="wall")
    args = parser.parse_args()
    if args.tiny:
        args.model, args.image_size, args.images, args.steps, args.repeats = "lenet", 28, 8, 3, 1
        args.batch_size = min(args.batch_size, 4)
    harness.apply_arguments(args, args.device)

    model = _model(args)
    x, y = _data(args)
    x, y = x.to(args.device), y.to(args.device)
    batches = [(x[i:i + args.batch_size], y[i:i + args.batch_size]) for i in range(0, len(x), args.batch_size)]

    def attack():
        return PGD(model, eps=args.eps, step_size=2.5 * args.eps / args.steps, steps=args.steps)

    # ---- correctness first
    with tempfile.TemporaryDirectory() as tmp:
        res = evaluate(model, (x.cpu(), y.cpu()), {"pgd": attack()}, out=tmp, batch_size=args.batch_size,
                       device=args.device, progress=False, report=False, examples=0, metrics=())
        record = json.loads((pathlib.Path(tmp) / "records" / "rank-0.jsonl").read_text().splitlines()[0])
    # the runner draws each batch's randomness from a generator seeded with batch_seed(seed, batch, attack)
    generator = torch.Generator(device=args.device).manual_seed(batch_seed(0, 0, 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(batch_seed(0, 0, 0))
        expected = attack().run(*batches[0], generator=generator)
    harness.check(record["attacks"]["pgd"]["pred"] == expected.logits.argmax(1).tolist(),
                  "the runner's adversarial predictions differ from PGD.run seeded as the runner seeds it")
    harness.check(max(record["attacks"]["pgd"]["linf"]) <= args.eps + 1e-6, "a perturbation exceeds eps")

    # ---- timings (first call of each is the warm-up)
    def floor():
        for xb, yb in batches:
            for _ in range(args.steps):
                xv = xb.clone().requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(model(xv), yb)
                torch.autograd.grad(loss, xv)

    def plain_loop():
        atk = attack()
        for b, (xb, yb) in enumerate(batches):  # a seeded generator per batch, as the runner does
            atk.run(xb, yb, generator=torch.Generator(device=args.device).manual_seed(b))

    def runner():
        with tempfile.TemporaryDirectory() as tmp:
            evaluate(model, (x.cpu(), y.cpu()), {"pgd": attack()}, out=tmp, batch_size=args.batch_size,
                     device=args.device, progress=False, report=False, examples=0, metrics=())

    candidates = {"model-only floor": floor, "PGD.run loop": plain_loop, "evaluate()": runner}
    t = harness.timeit(candidates, rounds=args.repeats, warmup=1, clock=args.clock, device=args.device)
    seconds, vs_floor = t.median(), t.paired_ratios("model-only floor")
    rows = {name: {"seconds": seconds[name], "images_per_second": len(x) / seconds[name],
                   "all_seconds": t.rounds[name], "fraction_of_floor": vs_floor[name]} for name in candidates}
    print(f"PGD-{args.steps}, eps={args.eps:.5g}, {args.model} at {args.image_size} px, {len(x)} images, "
          f"batch {args.batch_size}, {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'':20}{'img/s':>10}{'vs floor':>10}")
    for name, row in rows.items():
        print(f"{name:20}{row['images_per_second']:10.2f}{row['fraction_of_floor']:10.2f}")
    overhead = t.paired_ratios("evaluate()")["PGD.run loop"] - 1  # median of t_evaluate / t_loop, minus 1
    print(f"runner overhead over the plain loop: {100 * overhead:.1f}%")
    settings = {k: v for k, v in vars(args).items() if k != "label"}
    harness.Result("eval_throughput" + ("-quick" if args.tiny else ""), rows, notes={
        "settings": settings, "clock": args.clock, "correctness": "runner predictions == PGD.run; linf <= eps",
        "runner_overhead": overhead, "model_weights": "random (seed 0)",
        "clean_accuracy": res["clean"]["accuracy"]}, device=args.device).write()


if __name__ == "__main__":
    main()
