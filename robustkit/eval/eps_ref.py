"""Deep Defense's FGS evaluation (section 4.1, Table 1): eps_ref, the smallest L-inf budget at which FGS
misclassifies half of the images, and the accuracies at 0.2, 0.5 and 1.0 eps_ref."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from robustkit.attacks.base import Attack
from robustkit.metrics import accuracy_at_eps_ref, eps_ref_bisect


def _fgsm(model: nn.Module, eps: float) -> Attack:
    from robustkit.attacks import FGSM
    return FGSM(model, eps=eps)


def fgs_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, batch_size: int = 500,
                 make_attack: Callable[[nn.Module, float], Attack] = _fgsm) -> float:
    """Accuracy of ``model`` on FGS adversarial images at budget ``eps`` (eps = 0: clean accuracy)."""
    correct = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if eps > 0:
            xb = make_attack(model, eps)(xb, yb)
        with torch.no_grad():
            correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / len(x)


def fgs_eps_ref(model: nn.Module, x: Tensor, y: Tensor, *, high: float = 1.0, tol: float = 1e-3,
                reference: Optional[float] = None, multiples: Sequence[float] = (0.2, 0.5, 1.0),
                make_attack: Callable[[nn.Module, float], Attack] = _fgsm, batch_size: int = 500) -> Dict:
    """eps_ref by bisection over FGS budgets in ``[0, high]`` and the accuracies at its multiples.

    Deep Defense fixes eps_ref on its regularised model and then compares every other model at that
    budget: pass ``reference=`` (an eps_ref found before) to evaluate a model at someone else's eps_ref.

    Example::

        >>> table = fgs_eps_ref(model, x, y)              # {"eps_ref": 0.11, "accuracy": {"0.2": ..., ...}}
        >>> other = fgs_eps_ref(baseline, x, y, reference=table["eps_ref"])
    """
    def accuracy(eps: float) -> float:
        return fgs_accuracy(model, x, y, eps, batch_size=batch_size, make_attack=make_attack)

    eps_ref = reference if reference is not None else eps_ref_bisect(lambda e: 1 - accuracy(e), 0.0, high,
                                                                     tol=tol)
    return {"eps_ref": eps_ref, "accuracy": accuracy_at_eps_ref(accuracy, eps_ref, multiples)}


__all__ = ["fgs_accuracy", "fgs_eps_ref"]
