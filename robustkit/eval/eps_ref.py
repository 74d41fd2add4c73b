"""Deep Defense's FGS evaluation (section 4.1, Table 1): eps_ref, the smallest L-inf budget at which FGS
misclassifies half of the images, and the accuracies at 0.2, 0.5 and 1.0 eps_ref; and Table 2's rho_inf, from
each image's smallest fooling FGS budget."""
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


def fgs_minimal_eps(model: nn.Module, x: Tensor, y: Tensor, *, high: float = 1.0, grid: int = 200,
                    refine: int = 12, batch_size: int = 500) -> Tensor:
    """Per image, the smallest FGS budget that misclassifies it: the ``||dx_k||_inf`` of Deep Defense's
    rho_inf (supplementary Eq. 2: ``rho_inf = mean_k ||dx_k||_inf / ||x_k||_inf`` under FGS). ``[N]``
    float64: 0 where the clean image is already misclassified, ``inf`` where no budget up to ``high`` fools it.

    FGS moves each pixel by ``eps`` along ``sign(grad_x CE)``, a direction that does not depend on ``eps``, and
    clips to [0, 1]; so each budget costs a forward. The first fooling budget on the grid
    ``high * i / grid`` is found, then ``refine`` bisection steps between it and the grid point below it (the
    answer is within ``high / grid / 2**refine`` of the first crossing at the grid's resolution).

    Example::

        >>> eps = fgs_minimal_eps(model, x, y)
        >>> ok = torch.isfinite(eps) & (eps > 0)
        >>> rho_inf = (eps[ok] / x.flatten(1).amax(1)[ok]).mean()
    """
    from robustkit.attacks import FGSM
    if not high > 0:
        raise ValueError(f"fgs_minimal_eps: high must be > 0, got {high!r}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"fgs_minimal_eps: grid must be an int >= 1, got {grid!r}")
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"fgs_minimal_eps: refine must be an int >= 0, got {refine!r}")
    out = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        # FGS at eps = 1 sends each pixel to 0 or 1 along the gradient's sign (or leaves it where the sign is 0)
        direction = torch.sign(FGSM(model, eps=1.0)(xb, yb) - xb)

        def fooled(rows: Tensor, eps: Tensor) -> Tensor:
            shape = (-1,) + (1,) * (xb.dim() - 1)
            adv = (xb[rows] + eps.to(xb.dtype).view(shape) * direction[rows]).clamp(0, 1)
            with torch.no_grad():
                return model(adv).argmax(1) != yb[rows]

        found = torch.full((len(xb),), float("inf"), dtype=torch.float64)
        with torch.no_grad():
            found[model(xb).argmax(1) != yb] = 0.0
        for i in range(1, grid + 1):
            rows = torch.isinf(found).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            eps = high * i / grid
            hit = fooled(rows, torch.full((rows.numel(),), eps, dtype=torch.float64))
            found[rows[hit]] = eps
        rows = (torch.isfinite(found) & (found > 0)).nonzero().squeeze(1)
        hi = found[rows].clone()
        lo = (hi - high / grid).clamp_min(0.0)
        for _ in range(refine if rows.numel() else 0):
            mid = (lo + hi) / 2
            hit = fooled(rows, mid)
            hi = torch.where(hit, mid, hi)
            lo = torch.where(hit, lo, mid)
        found[rows] = hi
        out.append(found)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


__all__ = ["fgs_accuracy", "fgs_eps_ref", "fgs_minimal_eps"]
