"""Small, real attacks written against the Attack contract, so the evaluation tests do not depend on the
attack families being developed elsewhere."""
import torch
import torch.nn.functional as F

from robustkit.attacks.base import Attack


class OneStepSign(Attack):
    """FGSM with an optional random start drawn from the attack's seeded generator:
    ``x' = clip(x + u + eps sign(grad_x CE(f(x + u), y)))`` with ``u ~ U[-eps/2, eps/2]`` when ``random_start``."""

    def __init__(self, model=None, *, eps=0.1, random_start=False, **kw):
        super().__init__(model, **kw)
        self.eps = eps
        self.norm = "linf"
        self.random_start = random_start

    def _run_batch(self, x, y, target):
        start = x
        if self.random_start:
            noise = torch.rand(x.shape, generator=self._generator, device=x.device) - 0.5
            start = (x + self.eps * noise).clamp(0, 1)
        x_var = start.clone().requires_grad_(True)
        logits = torch.stack(self.member_logits(x_var)).mean(dim=0)     # an ensemble attacks its mean logits
        loss = F.cross_entropy(logits, y if target is None else target)
        (grad,) = torch.autograd.grad(loss, x_var)
        sign = grad.sign() if target is None else -grad.sign()
        adv = (start + self.eps * sign).clamp(0, 1)
        adv = torch.max(torch.min(adv, x + self.eps), x - self.eps)
        return self.make_result(x, adv, y, target, steps=torch.ones_like(y))


class MinimalSign(Attack):
    """A minimal-budget L-inf attack: per image, bisection over the FGSM budget (the smallest eps of the
    gradient-sign direction at the clean image that changes the prediction)."""

    minimal_norm = "linf"

    def __init__(self, model, *, max_eps=1.0, iterations=12, **kw):
        super().__init__(model, **kw)
        self.max_eps = max_eps
        self.iterations = iterations

    def _run_batch(self, x, y, target):
        x_var = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(self.member_logits(x_var)[0], y), x_var)
        direction = grad.sign()
        shape = (-1,) + (1,) * (x.dim() - 1)
        low, high = torch.zeros(len(x)), torch.full((len(x),), float(self.max_eps))
        with torch.no_grad():
            fooled_at_high = self.predict((x + high.view(shape) * direction).clamp(0, 1)).argmax(1) != y
            for _ in range(self.iterations):
                mid = (low + high) / 2
                fooled = self.predict((x + mid.view(shape) * direction).clamp(0, 1)).argmax(1) != y
                high, low = torch.where(fooled, mid, high), torch.where(fooled, low, mid)
        eps = torch.where(fooled_at_high, high, torch.zeros_like(high))
        adv = (x + eps.view(shape) * direction).clamp(0, 1)
        return self.make_result(x, adv, y, target, steps=torch.full_like(y, self.iterations))
