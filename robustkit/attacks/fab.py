"""FAB, the Fast Adaptive Boundary attack (Croce and Hein 2020, "Minimally distorted adversarial examples with
a fast adaptive boundary attack"), L-inf and L2, untargeted and targeted (FAB-T, as AutoAttack runs it)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from robustkit.attacks.apgd import top_other_classes
from robustkit.attacks.base import AttackOutput, MinimalNormAttack
from robustkit.attacks.dlr import check_label_range
from robustkit.attacks.restarts import random_point_at

_LARGE = 1e30  # a finite "never saturates" key (inf * 0 would be NaN)
#: the most rows one FAB call attacks (FAB-T's targets are batched up to this)
_TARGET_ROWS = 4096


def project_onto_hyperplane_in_box(point: Tensor, w: Tensor, rhs: Tensor, norm: str) -> Tensor:
    """The smallest ``d`` (L-inf or L2) with ``w . d = rhs`` and ``0 <= point + d <= 1``, per row.

    ``point, w: [B, D]``, ``rhs: [B]``. Moving coordinate ``j`` in the direction that raises ``w . d`` has
    room ``u_j`` before the box; the minimiser is ``d_j = sign_j * min(t * c_j, u_j)`` (``c_j = 1`` for L-inf,
    ``|w_j|`` for L2), with ``t`` the smallest value at which ``g(t) = sum_j |w_j| min(t c_j, u_j)`` reaches
    ``|rhs|``. ``g`` is piecewise linear and increasing, so ``t`` comes from one sort of the breakpoints
    ``u_j / c_j`` and prefix sums. When the box cannot reach the hyperplane, every coordinate moves to the box
    boundary (the closest point in the direction of ``w``).
    """
    flip = torch.where(rhs < 0, -1.0, 1.0).to(w.dtype).unsqueeze(1)
    wv = w * flip
    goal = rhs.abs()
    direction = torch.sign(wv)
    room = torch.where(wv > 0, 1.0 - point, point).clamp_min(0.0)
    weight = wv.abs()
    if norm == "linf":
        key, slope, coef = room, weight, torch.ones_like(weight)
    else:
        key = torch.where(weight > 0, room / weight.clamp_min(1e-30), torch.full_like(room, _LARGE))
        slope, coef = weight * weight, weight
    keys, order = key.sort(dim=1)
    saturated = (weight * room).gather(1, order)
    slopes = slope.gather(1, order)
    before = saturated.cumsum(dim=1) - saturated                     # sum_{j < k} |w_j| u_j
    after = slopes.flip(1).cumsum(dim=1).flip(1)                      # sum_{j >= k} slope_j
    reach = before + keys * after                                     # g at the k-th breakpoint
    k = (reach < goal.unsqueeze(1)).sum(dim=1, keepdim=True)          # first breakpoint with g >= goal
    feasible = k.squeeze(1) < keys.shape[1]
    k_safe = k.clamp(max=keys.shape[1] - 1)
    t = (goal.unsqueeze(1) - before.gather(1, k_safe)) / after.gather(1, k_safe).clamp_min(1e-30)
    t = torch.where(feasible.unsqueeze(1), t, torch.full_like(t, _LARGE))
    return direction * torch.minimum(t * coef, room)


def _size(delta: Tensor, norm: str) -> Tensor:
    return delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)


class FAB(MinimalNormAttack):
    """FAB (Algorithm 1 of the paper): from ``x(i)``, project both ``x(i)`` and the original ``x`` onto the
    linearised decision boundary (the hyperplane of ``f_s - f_y`` at ``x(i)``) inside the [0, 1] box,
    and step to the convex combination ``(1 - α)(x(i) + η δ) + α(x + η δ_orig)`` with
    ``α = min(||δ|| / (||δ|| + ||δ_orig||), alpha_max)``, which biases the iterate toward the original point;
    once adversarial, record it if it is the smallest so far and step back toward ``x`` by ``β``.

    Untargeted, ``s`` is the class whose linearised boundary is closest (distance
    ``|f_s - f_y| / ||∇(f_s - f_y)||_q``, ``q`` the dual norm; one backward per class). With ``target=n``
    (FAB-T) ``s`` runs over the ``n`` highest-scoring other classes in turn, one backward per step; success
    is still any misclassification, as in AutoAttack. An explicit ``target`` tensor given to :meth:`run`
    attacks toward it and counts reaching it.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per run (100). alpha_max, eta, beta: the paper's 0.1, 1.05, 0.9.
        restarts: further runs from random points at distance ``min(best, eps) / 2`` (needs ``eps``).
        eps: optional budget: a sample leaves the active batch once it has an adversarial example within
            ``eps`` (evaluation, as AutoAttack's FAB-T), and restarts draw their starts with it.

    ``extras["norm"]`` holds the smallest adversarial norm found (``inf`` where none).

    Example::

        >>> res = FAB(model, norm="linf").run(x, y)             # minimal L-inf perturbations
        >>> res = FAB(model, norm="linf", target=9, eps=0.3).run(x, y)   # FAB-T as in AutoAttack
    """

    def __init__(self, model: Optional[nn.Module] = None, *, norm: str = "linf", steps: int = 100,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, target: Optional[int] = None,
                 restarts: int = 1, eps: Optional[float] = None, seed: Optional[int] = 0, **options):
        super().__init__(model, norm=norm, seed=seed, **options)
        name = type(self).__name__
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{name}: steps must be an int >= 1, got {steps!r}")
        for arg, value, low, high in (("alpha_max", alpha_max, 0.0, 1.0), ("beta", beta, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name}: {arg} must be a number in [{low:g}, {high:g}], got {value!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 1.0:
            raise ValueError(f"{name}: eta must be a number >= 1 (the overshoot), got {eta!r}")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 1):
            raise ValueError(f"{name}: target must be None or the number of target classes >= 1, got {target!r}")
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"{name}: restarts must be an int >= 1, got {restarts!r}")
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0):
            raise ValueError(f"{name}: eps must be None or a number > 0, got {eps!r}")
        if restarts > 1 and eps is None:
            raise ValueError(f"{name}: restarts > 1 draws random starts within eps; pass eps=...")
        self.steps, self.alpha_max, self.eta, self.beta = steps, float(alpha_max), float(eta), float(beta)
        self.target_classes, self.restarts, self.eps = target, restarts, None if eps is None else float(eps)

    def __repr__(self) -> str:
        return (f"FAB(norm={self.norm!r}, steps={self.steps}, target={self.target_classes}, "
                f"restarts={self.restarts}, eps={self.eps})")

    def _attack(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                generator: Optional[torch.Generator]) -> AttackOutput:
        batch = x.shape[0]
        best = torch.full((batch,), float("inf"), dtype=x.dtype, device=x.device)
        adv, used = x.clone(), torch.zeros(batch, dtype=torch.int64, device=x.device)
        if batch == 0:
            return AttackOutput(adv=adv, steps=used, extras={"norm": best})
        with torch.no_grad():
            clean = self.logits(x)
        num_classes = clean.shape[1]
        check_label_range(type(self).__name__, num_classes, y, target)
        if num_classes < 2:
            raise ValueError(f"FAB: the model must have at least 2 classes, got {num_classes}")
        targeted_success = target is not None
        if target is not None:
            goals = [target]
        elif self.target_classes is not None:
            goals = list(top_other_classes(clean, y, min(self.target_classes, num_classes - 1)).unbind(1))
        else:
            goals = [None]
        hit = clean.argmax(1) == target if targeted_success else clean.argmax(1) != y
        best[hit] = 0.0
        for restart in range(self.restarts):
            # minimal norm: every sample on every run; with a budget, only those not yet within eps. The
            # targets run as one batch of len(goals) * n rows (at most _TARGET_ROWS), a sample's rows leaving
            # together once one is within eps: FAB-T target after target, in fewer, larger forwards.
            first = 0
            while first < len(goals):
                todo = (~hit).nonzero().squeeze(1) if self.eps is None else (best > self.eps).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                chunk = goals[first:first + max(1, _TARGET_ROWS // todo.numel())]
                first += len(chunk)
                rows = todo.repeat(len(chunk))  # copy-major: target g of sample todo[i] is row g * n + i
                start = x[rows] if restart == 0 else self._random_start(x[rows], best[rows], generator)
                goal_rows = None if chunk[0] is None else torch.cat([g[todo] for g in chunk])
                groups = torch.arange(todo.numel(), device=x.device).repeat(len(chunk))
                sub_adv, sub_best, sub_used = self._run(x[rows], y[rows], goal_rows, targeted_success, start, groups)
                used.index_add_(0, rows, sub_used)
                for g in range(len(chunk)):
                    part = slice(g * todo.numel(), (g + 1) * todo.numel())
                    better = sub_best[part] < best[todo]
                    adv[todo[better]] = sub_adv[part][better]
                    best[todo[better]] = sub_best[part][better]
        return AttackOutput(adv=adv, steps=used, extras={"norm": best})

    def _random_start(self, x: Tensor, best: Tensor, generator) -> Tensor:
        radius = torch.minimum(best, torch.full_like(best, self.eps)) * 0.5  # type: ignore[arg-type]
        return random_point_at(x, radius, self.norm, generator)

    def _hyperplane(self, x_i: Tensor, y: Tensor, goal: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """``(f [B], w [B, D], logits [B, C])``: the value and gradient of ``f_s - f_y`` at ``x_i`` for the
        chosen class ``s`` (the target, or the closest linearised boundary)."""
        x_var = x_i.detach().requires_grad_(True)
        logits = self.logits(x_var)
        own = logits.gather(1, y.unsqueeze(1)).squeeze(1)
        if goal is not None:
            f = logits.gather(1, goal.unsqueeze(1)).squeeze(1) - own
            (w,) = torch.autograd.grad(f.sum(), x_var)
            return f.detach(), w.flatten(1), logits.detach()
        num_classes = logits.shape[1]
        values, grads = [], []
        for c in range(num_classes):
            f_c = logits[:, c] - own
            (g,) = torch.autograd.grad(f_c.sum(), x_var, retain_graph=c < num_classes - 1)
            values.append(f_c.detach())
            grads.append(g.flatten(1))
        f_all = torch.stack(values, dim=1)           # [B, C]
        w_all = torch.stack(grads, dim=1)            # [B, C, D]
        dual = w_all.abs().sum(dim=2) if self.norm == "linf" else w_all.norm(dim=2)
        distance = f_all.abs() / dual.clamp_min(1e-12)
        distance.scatter_(1, y.unsqueeze(1), float("inf"))
        s = distance.argmin(dim=1)
        f = f_all.gather(1, s.unsqueeze(1)).squeeze(1)
        w = w_all[torch.arange(w_all.shape[0], device=w_all.device), s]
        return f, w, logits.detach()

    def _run(self, x: Tensor, y: Tensor, goal: Optional[Tensor], targeted_success: bool, start: Tensor,
             groups: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One FAB run per row from ``start``; ``groups [B]``: rows of one sample (its targets), which leave
        the active batch together once one of them is within ``eps``."""
        batch = x.shape[0]
        shape = x.shape
        x_flat = x.flatten(1)
        out = x.clone()
        best = torch.full((batch,), float("inf"), dtype=x.dtype, device=x.device)
        used = torch.zeros(batch, dtype=torch.int64, device=x.device)
        active = torch.arange(batch, device=x.device)
        x_i = start.flatten(1).clone()
        num_groups = int(groups.max()) + 1 if batch else 0  # once, not a host sync per step
        for _ in range(self.steps):
            x_a = x_flat[active]
            g_a = None if goal is None else goal[active]
            f, w, logits = self._hyperplane(x_i.view(-1, *shape[1:]), y[active], g_a)
            used[active] += 1
            rhs_i = -f
            rhs_orig = -f - (w * (x_a - x_i)).sum(dim=1)
            delta_i = project_onto_hyperplane_in_box(x_i, w, rhs_i, self.norm)
            delta_orig = project_onto_hyperplane_in_box(x_a, w, rhs_orig, self.norm)
            size_i, size_orig = _size(delta_i, self.norm), _size(delta_orig, self.norm)
            alpha = (size_i / (size_i + size_orig).clamp_min(1e-12)).clamp(max=self.alpha_max).unsqueeze(1)
            x_next = ((1 - alpha) * (x_i + self.eta * delta_i) + alpha * (x_a + self.eta * delta_orig)).clamp_(0.0, 1.0)
            with torch.no_grad():
                pred = self.logits(x_next.view(-1, *shape[1:])).argmax(dim=1)
            hit = pred == g_a if targeted_success else pred != y[active]
            size = _size(x_next - x_a, self.norm)
            improve = hit & (size < best[active])
            rows = active[improve]
            out.view(batch, -1)[rows] = x_next[improve]
            best[rows] = size[improve]
            # once adversarial, step back toward the original point (the paper's β)
            x_next = torch.where(hit.unsqueeze(1), (1 - self.beta) * x_a + self.beta * x_next, x_next)
            if self.eps is not None:
                group_best = best.new_full((num_groups,), float("inf"))
                group_best.scatter_reduce_(0, groups, best, reduce="amin")
                keep = group_best[groups[active]] > self.eps
                if not bool(keep.all()):
                    active, x_next = active[keep], x_next[keep]
                    if active.numel() == 0:
                        break
            x_i = x_next
        return out, best, used
