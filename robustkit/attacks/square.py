"""Square Attack (Andriushchenko, Croce, Flammarion and Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search"): score-based, no gradient, so gradient masking does not stop it."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from robustkit.attacks.base import AttackOutput, FixedBudgetAttack
from robustkit.attacks.dlr import check_label_range

# Sec. 3 of the paper: for a 10,000-query budget, p halves after these iterations (rescaled to other budgets).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    """The fraction ``p`` of the image a square covers at ``iteration`` of a ``queries`` budget."""
    rescaled = int(iteration / max(queries, 1) * 10000)
    halvings = sum(1 for h in _HALVINGS if rescaled > h)
    return p_init / (2 ** halvings)


def margin(logits: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
    """``z_y - max_{j != y} z_j`` untargeted, ``max_{j != t} z_j - z_t`` targeted: negative means success."""
    label = y if target is None else target
    own = logits.gather(1, label.unsqueeze(1)).squeeze(1)
    other = logits.scatter(1, label.unsqueeze(1), float("-inf")).amax(dim=1)
    return own - other if target is None else other - own


def _window_mask(batch: int, height: int, width: int, side: int, generator, device) -> Tuple[Tensor, Tensor, Tensor]:
    """A random ``side x side`` window per sample: ``(mask [B, 1, H, W] bool, top [B], left [B])``."""
    top = torch.randint(0, height - side + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, width - side + 1, (batch,), generator=generator, device=device)
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + side).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + side).view(-1, 1, 1)))
    return inside.unsqueeze(1), top, left


def pseudo_gaussian(side: int, dtype, device) -> Tensor:
    """Eq. (2): concentric square rings whose value grows toward the centre, ``[side, side]``, unit L2 norm."""
    n = side // 2
    centre = (side - 1) / 2
    idx = torch.arange(side, device=device, dtype=torch.float64)
    ring = torch.maximum((idx.view(-1, 1) - centre).abs(), (idx.view(1, -1) - centre).abs()).floor().long()
    ring = ring.clamp(max=n)
    # value(r) = sum_{k=0}^{n - r} 1 / (n + 1 - k)^2
    terms = 1.0 / (n + 1 - torch.arange(n + 1, device=device, dtype=torch.float64)) ** 2
    cumulative = terms.cumsum(0)
    pattern = cumulative[n - ring]
    return (pattern / pattern.norm()).to(dtype)


def _place(pattern: Tensor, batch: int, height: int, width: int, top: Tensor, left: Tensor) -> Tensor:
    """``[B, 1, H, W]`` zeros with ``pattern [s, s]`` at each sample's window."""
    side = pattern.shape[0]
    canvas = pattern.new_zeros((batch, height, width))
    ar = torch.arange(side, device=pattern.device)
    rows = (top.view(-1, 1) + ar).view(batch, side, 1).expand(batch, side, side)
    cols = (left.view(-1, 1) + ar).view(batch, 1, side).expand(batch, side, side)
    b = torch.arange(batch, device=pattern.device).view(-1, 1, 1).expand(batch, side, side)
    canvas[b, rows, cols] = pattern.expand(batch, side, side)
    return canvas.unsqueeze(1)


class Square(FixedBudgetAttack):
    """Square Attack: random search over square-shaped updates at the boundary of the ball (Algorithm 1 of
    the paper), L-inf (Sec. 3.1) and L2 (Algorithm 3), untargeted or targeted, with the margin loss.

    Each iteration proposes, per sample still robust, a new perturbation that differs from the current one in
    a random ``s x s`` window (``s = round(sqrt(p * H * W))``, ``p`` starting at ``p_init`` and halved on the
    paper's schedule) and keeps it if the margin ``z_y - max_{j != y} z_j`` drops. One forward per
    iteration over the samples not yet broken; ``queries`` counts them, the initial point included.

    Args:
        eps, norm: the ball (``"linf"`` or ``"l2"``).
        queries: the query budget per sample (5000 in AutoAttack), >= 1.
        p_init: the initial fraction of pixels a square covers, in (0, 1] (0.8 in AutoAttack).
        restarts: independent runs on the samples not broken yet.
        seed and the shared options: :class:`robustkit.attacks.base.AttackOptions`.

    ``steps`` in the result counts the queries each sample used; ``extras["margin"]`` holds the final margin.

    Example::

        >>> res = Square(model, eps=8 / 255, queries=5000).run(x, y)
    """

    def __init__(self, model: Optional[nn.Module] = None, *, eps: float = 8 / 255, norm: str = "linf",
                 queries: int = 5000, p_init: float = 0.8, restarts: int = 1, seed: Optional[int] = 0, **options):
        super().__init__(model, eps=eps, norm=norm, seed=seed, **options)
        name = type(self).__name__
        if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
            raise ValueError(f"{name}: queries must be an int >= 1, got {queries!r}")
        if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0.0 < p_init <= 1.0:
            raise ValueError(f"{name}: p_init must be a number in (0, 1], got {p_init!r}")
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"{name}: restarts must be an int >= 1, got {restarts!r}")
        self.queries, self.p_init, self.restarts = queries, float(p_init), restarts

    def __repr__(self) -> str:
        return (f"Square(eps={self.eps:.6g}, norm={self.norm!r}, queries={self.queries}, p_init={self.p_init}, "
                f"restarts={self.restarts})")

    def _attack(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                generator: Optional[torch.Generator]) -> AttackOutput:
        if x.dim() != 4:
            raise ValueError(f"Square: x must be images [B, C, H, W], got shape {list(x.shape)}")
        if min(x.shape[2], x.shape[3]) < 2:
            raise ValueError(f"Square: images must be at least 2 x 2 pixels, got {list(x.shape[2:])}")
        batch = x.shape[0]
        adv, used = x.clone(), torch.zeros(batch, dtype=torch.int64, device=x.device)
        best = torch.full((batch,), float("inf"), dtype=torch.float32, device=x.device)
        if batch == 0:
            return AttackOutput(adv=adv, steps=used, extras={"margin": best})
        logits = self.predict(x)
        check_label_range(type(self).__name__, logits.shape[1], y, target)
        best = margin(logits, y, target).float()
        for _ in range(self.restarts):
            todo = (best >= 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            t_sub = None if target is None else target[todo]
            run = self._search(x[todo], y[todo], t_sub, generator)
            sub_adv, sub_margin, sub_used = run
            used[todo] += sub_used
            better = sub_margin < best[todo]
            adv[todo[better]] = sub_adv[better]
            best[todo[better]] = sub_margin[better]
        return AttackOutput(adv=adv, steps=used, extras={"margin": best})

    # ---- one run ----------------------------------------------------------------------------------------
    def _search(self, x: Tensor, y: Tensor, target: Optional[Tensor], generator) -> Tuple[Tensor, Tensor, Tensor]:
        batch, channels, height, width = x.shape
        delta = self._init_linf(x, generator) if self.norm == "linf" else self._init_l2(x, generator)
        current = (x + delta).clamp_(0.0, 1.0)
        current_margin = margin(self.predict(current), y, target).float()
        used = torch.ones(batch, dtype=torch.int64, device=x.device)
        # the state of the samples still robust, compacted: gathers and scatters happen only when one breaks
        active = (current_margin >= 0).nonzero().squeeze(1)
        x_a, cur_a, margin_a, y_a = x[active], current[active], current_margin[active], y[active]
        t_a = None if target is None else target[active]
        iteration = 1
        while iteration < self.queries and active.numel():
            p = square_fraction(self.p_init, iteration, self.queries)
            side = int(round(math.sqrt(p * height * width)))
            side = min(max(side, 1 if self.norm == "linf" else 3), min(height, width) - 1)
            if self.norm == "linf":
                proposal = self._propose_linf(x_a, cur_a, side, generator)
            else:
                proposal = self._propose_l2(x_a, cur_a, side, generator)
            new_margin = margin(self.predict(proposal), y_a, t_a).float()
            accept = new_margin < margin_a
            cur_a = torch.where(accept.view(-1, 1, 1, 1), proposal, cur_a)
            margin_a = torch.where(accept, new_margin, margin_a)
            iteration += 1
            broken = margin_a < 0
            last = iteration == self.queries
            if last or bool(broken.any()):  # one host sync per query, as before: which samples leave
                current[active], current_margin[active] = cur_a, margin_a
                used[active if last else active[broken]] = iteration  # the initial point and iteration - 1 proposals
                if last:
                    break
                keep = (~broken).nonzero().squeeze(1)
                active, x_a, cur_a, margin_a, y_a = active[keep], x_a[keep], cur_a[keep], margin_a[keep], y_a[keep]
                t_a = None if t_a is None else t_a[keep]
        return current, current_margin, used

    def _init_linf(self, x: Tensor, generator) -> Tensor:
        """Vertical stripes of width 1 with a random sign per column and channel (Sec. 3.1)."""
        batch, channels, _, width = x.shape
        signs = torch.randint(0, 2, (batch, channels, 1, width), generator=generator, device=x.device)
        return (signs.to(x.dtype) * 2 - 1) * self.eps

    def _propose_linf(self, x: Tensor, current: Tensor, side: int, generator) -> Tensor:
        batch, channels, height, width = x.shape
        mask, _, _ = _window_mask(batch, height, width, side, generator, x.device)
        signs = torch.randint(0, 2, (batch, channels, 1, 1), generator=generator, device=x.device)
        window = (signs.to(x.dtype) * 2 - 1) * self.eps
        delta = torch.where(mask, window, current - x)
        return (x + delta).clamp_(0.0, 1.0)

    def _init_l2(self, x: Tensor, generator) -> Tensor:
        """A grid of pseudo-Gaussian squares of side ``H // 5`` with random signs, scaled to L2 norm ``eps``."""
        batch, channels, height, width = x.shape
        tile = max(min(height, width) // 5, 1)
        pattern = pseudo_gaussian(tile, x.dtype, x.device)
        delta = x.new_zeros(x.shape)
        for top in range(0, height - tile + 1, tile):
            for left in range(0, width - tile + 1, tile):
                signs = torch.randint(0, 2, (batch, channels, 1, 1), generator=generator, device=x.device)
                delta[:, :, top:top + tile, left:left + tile] = (signs.to(x.dtype) * 2 - 1) * pattern
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return delta * (self.eps / norms)

    def _propose_l2(self, x: Tensor, current: Tensor, side: int, generator) -> Tensor:
        """Algorithm 3: move the perturbation mass of two random windows W1, W2 into W1, reshaped toward a
        pseudo-Gaussian square of random sign, using up the budget left unused by the current perturbation."""
        batch, channels, height, width = x.shape
        nu = current - x  # [B, C, H, W]
        mask1, top1, left1 = _window_mask(batch, height, width, side, generator, x.device)
        mask2, _, _ = _window_mask(batch, height, width, side, generator, x.device)
        unused = (self.eps ** 2 - nu.flatten(1).pow(2).sum(dim=1)).clamp_min(0.0)  # [B]
        union = (mask1 | mask2).to(x.dtype)
        available = ((nu * union).pow(2).sum(dim=(2, 3)) + unused.view(-1, 1) / channels).sqrt()  # [B, C]
        in_w1 = nu * mask1.to(x.dtype)
        w1_norm = in_w1.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12)  # [B, C, 1, 1]
        bump = _place(pseudo_gaussian(side, x.dtype, x.device), batch, height, width, top1, left1)  # [B, 1, H, W]
        signs = torch.randint(0, 2, (batch, channels, 1, 1), generator=generator, device=x.device)
        direction = (signs.to(x.dtype) * 2 - 1) * bump + in_w1 / w1_norm
        dir_norm = direction.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        new_w1 = direction / dir_norm * available.view(batch, channels, 1, 1)
        nu = torch.where(mask2, torch.zeros_like(nu), nu)
        nu = torch.where(mask1, new_w1, nu)
        # rounding can leave the norm a hair above eps: project back onto the ball, then into the box
        norms = nu.flatten(1).norm(dim=1).clamp_min(1e-12)
        nu = nu * (self.eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)
        return (x + nu).clamp_(0.0, 1.0)
