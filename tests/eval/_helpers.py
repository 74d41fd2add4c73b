"""Shared pieces of the evaluation tests: the tiny model and data (tests/_tiny.py), real attacks on it, and
result comparison."""
from robustkit.attacks import PGD, DeepFool
from tests._tiny import mnist_images, small_lenet  # noqa: F401

small_model = small_lenet


def real_attacks(model):
    """A fixed-budget attack whose random start makes the per-batch seeding matter (a resumed batch must draw
    the same noise), and a minimal-norm attack (curve, eps_ref)."""
    return {"sign": PGD(model, eps=0.1, steps=2, step_size=0.06, random_start=True),
            "minimal": DeepFool(model, steps=6)}


def comparable(results: dict) -> dict:
    """``results`` without what legitimately differs between two runs (wall-clock timing, world size)."""
    out = {k: v for k, v in results.items() if k not in ("software", "device")}
    out["attacks"] = {n: {k: v for k, v in e.items() if k != "timing"} for n, e in results["attacks"].items()}
    return out
