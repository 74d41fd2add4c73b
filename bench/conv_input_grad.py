"""robustkit.ops.conv2d_input_grad vs PyTorch's convolution input gradient (oneDNN on CPU, cuDNN on CUDA).

The attacks route a model's first-layer convolutions to the op on CPU (robustkit.attacks._conv_routing); the
shapes below are first layers of MNIST, CIFAR and ImageNet-style networks, and a few wider layers that show
where the routing must stop. Correctness first: every shape is compared with the float64 reference
(relative error under 1e-5) before it is timed. The two run in rotating rounds; times are the minimum over
``--repeats`` rounds (noise on a shared machine only adds time) and the speedup is the paired ratio (median
over rounds of PyTorch's time over ours), with one thread by default.

    python bench/conv_input_grad.py [--repeats 30] [--threads 1] [--device cpu]
    python bench/conv_input_grad.py --tiny     # three shapes, 5 rounds (-> conv_input_grad-quick.json)

Writes bench/results/<machine>/conv_input_grad.json.
"""
from __future__ import annotations

import argparse

import torch

import harness
from robustkit.ops import conv2d_input_grad, reference

#: (label, batch, C_in, C_out, kernel, padding, H); the routing rule's cases first
SHAPES = [
    ("MNIST LeNet conv1", 256, 1, 6, 5, 2, 28),
    ("MNIST ConvNet conv1", 256, 1, 32, 3, 1, 28),
    ("MNIST, 1 -> 32, 5x5", 256, 1, 32, 5, 2, 28),
    ("2 channels, 3x3", 128, 2, 8, 3, 1, 28),
    ("CIFAR conv1, 3 -> 32, 3x3", 256, 3, 32, 3, 1, 32),
    ("CIFAR ResNet conv1, 3 -> 64, 3x3", 128, 3, 64, 3, 1, 32),
    ("RGB, 3 -> 16, 5x5", 128, 3, 16, 5, 2, 32),
    ("RGB 56 px, 3 -> 64, 7x7", 16, 3, 64, 7, 3, 56),
    ("4 channels, 5x5 (not routed)", 64, 4, 8, 5, 2, 28),
    ("LeNet conv2, 6 -> 16 (not routed)", 256, 6, 16, 5, 0, 14),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timing rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="three shapes, 5 rounds: checks the script")
    harness.add_arguments(parser, threads=1, clock="wall")
    args = parser.parse_args()
    harness.apply_arguments(args, args.device)
    shapes = [SHAPES[0], SHAPES[4], SHAPES[-1]] if args.tiny else SHAPES
    repeats = min(args.repeats, 5) if args.tiny else args.repeats
    generator = torch.Generator().manual_seed(0)
    rows = []
    for label, batch, c_in, c_out, kernel, pad, size in shapes:
        out_size = size + 2 * pad - kernel + 1
        weight = torch.randn(c_out, c_in, kernel, kernel, generator=generator).to(args.device)
        x = torch.randn(batch, c_in, size, size, generator=generator).to(args.device)
        grad = torch.randn(batch, c_out, out_size, out_size, generator=generator).to(args.device)
        ours = conv2d_input_grad(grad, weight, (size, size), (pad, pad))
        ref = reference.conv2d_input_grad(grad.cpu(), weight.cpu(), (size, size), (pad, pad))
        error = ((ours.cpu().double() - ref).norm() / ref.norm()).item()
        harness.check(error < 1e-5, f"{label}: relative error {error:.2e} against the float64 reference")
        t = harness.timeit({
            "torch": lambda: torch.ops.aten.convolution_backward(
                grad, x, weight, [c_out], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [True, False, False]),
            "robustkit": lambda: conv2d_input_grad(grad, weight, (size, size), (pad, pad))},
            rounds=repeats, clock=args.clock, device=args.device)
        fastest = t.minimum()
        rows.append({"shape": label, "batch": batch, "c_in": c_in, "c_out": c_out, "kernel": kernel, "size": size,
                     "rel_error": f"{error:.1e}", "torch_ms": round(fastest["torch"] * 1e3, 3),
                     "robustkit_ms": round(fastest["robustkit"] * 1e3, 3),
                     "speedup": round(t.paired_ratios("torch")["robustkit"], 2)})
    harness.print_table(rows, ["shape", "batch", "rel_error", "torch_ms", "robustkit_ms", "speedup"])
    harness.Result("conv_input_grad" + ("-quick" if args.tiny else ""), rows,
                   notes={"rounds": repeats, "clock": args.clock, "times": "minimum over rounds",
                          "speedup": "paired: median over rounds of torch / robustkit in the same round"},
                   device=args.device).write()


if __name__ == "__main__":
    main()
