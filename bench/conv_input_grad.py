"""robustkit.ops.conv2d_input_grad vs PyTorch's convolution input gradient (oneDNN on CPU, cuDNN on CUDA).

The attacks route a model's first-layer convolutions to the op on CPU (robustkit.attacks._conv_routing); the
shapes below are first layers of MNIST, CIFAR and ImageNet-style networks, and a few wider layers that show
where the routing must stop. Correctness first: every shape is compared with the float64 reference
(relative error under 1e-5) before it is timed. Times are the minimum of ``--repeats`` calls after a warm-up
(noise on a shared machine only adds time), with one thread by default.

    python bench/conv_input_grad.py [--repeats 30] [--threads 1] [--device cpu]

Writes bench/results/<machine>/conv_input_grad.json.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from robustkit.ops import conv2d_input_grad, reference

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import print_table, write_results  # noqa: E402

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


def min_ms(fn, repeats: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for label, batch, c_in, c_out, kernel, pad, size in SHAPES:
        out_size = size + 2 * pad - kernel + 1
        weight = torch.randn(c_out, c_in, kernel, kernel, generator=generator).to(args.device)
        x = torch.randn(batch, c_in, size, size, generator=generator).to(args.device)
        grad = torch.randn(batch, c_out, out_size, out_size, generator=generator).to(args.device)
        ours = conv2d_input_grad(grad, weight, (size, size), (pad, pad))
        ref = reference.conv2d_input_grad(grad.cpu(), weight.cpu(), (size, size), (pad, pad))
        error = ((ours.cpu().double() - ref).norm() / ref.norm()).item()
        if not error < 1e-5:
            raise SystemExit(f"{label}: relative error {error:.2e} against the float64 reference")
        torch_ms = min_ms(lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, [c_out], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [True, False, False]),
            args.repeats, args.device)
        ours_ms = min_ms(lambda: conv2d_input_grad(grad, weight, (size, size), (pad, pad)), args.repeats, args.device)
        rows.append({"shape": label, "batch": batch, "c_in": c_in, "c_out": c_out, "kernel": kernel, "size": size,
                     "rel_error": f"{error:.1e}", "torch_ms": round(torch_ms, 3), "robustkit_ms": round(ours_ms, 3),
                     "speedup": round(torch_ms / ours_ms, 2)})
    print_table(rows, ["shape", "batch", "rel_error", "torch_ms", "robustkit_ms", "speedup"])
    path = write_results("conv_input_grad", args.device, {"threads": args.threads, "repeats": args.repeats,
                                                          "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
