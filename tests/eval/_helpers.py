"""Shared pieces of the evaluation tests: a small seeded model, the data, and result comparison."""
import torch

from robustkit.datasets import mnist
from robustkit.models import LeNet


def small_model(seed: int = 0) -> torch.nn.Module:
    """A narrow LeNet with seeded random weights: enough to exercise the runner (predictions vary, attacks
    change some of them) without training."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LeNet(width=2).eval()


def mnist_images(n: int):
    x, y = mnist("test")[:n]
    return x, y


def comparable(results: dict) -> dict:
    """``results`` without what legitimately differs between two runs (wall-clock timing, world size)."""
    out = {k: v for k, v in results.items() if k not in ("software", "device")}
    out["attacks"] = {n: {k: v for k, v in e.items() if k != "timing"} for n, e in results["attacks"].items()}
    return out
