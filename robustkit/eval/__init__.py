"""Robustness evaluation: metrics, the streaming resumable runner, torch.distributed sharding and reports.

Example::

    >>> from robustkit.eval import evaluate
    >>> results = evaluate(model, robustkit.datasets.mnist("test"), {"pgd": PGD(model, eps=0.3, steps=40)},
    ...                    out="runs/lenet", limit=1000)
    >>> results["attacks"]["pgd"]["metrics"]["robust_accuracy"]
"""
from robustkit import metrics
from robustkit.eval.eps_ref import fgs_accuracy, fgs_eps_ref
from robustkit.eval.gradcam import grad_cam
from robustkit.eval.runner import batch_seed, evaluate

__all__ = ["evaluate", "metrics", "grad_cam", "batch_seed", "fgs_eps_ref", "fgs_accuracy"]
