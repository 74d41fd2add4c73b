"""Naive implementations of the two foundation ops, written from the formulas in the issue and the papers,
independently of robustkit/ops/reference.py: explicit per-model, per-sample loops and the textbook
softmax, all in float64."""
from __future__ import annotations

import torch


def naive_ensemble_ce(logits, target, temperature, soft_weight, hard_weight):
    """Eq. 8 of the self-distillation attack: sum_k [soft * CE(z_k / T, y) + hard * CE(z_k, y)], per sample.
    Uses log(sum exp) with an explicit shift only because float64 would overflow beyond |z/T| ~ 700."""
    z = logits.double()
    num_models, batch, _ = z.shape
    out = torch.zeros(batch, dtype=torch.float64)
    for b in range(batch):
        for k in range(num_models):
            for weight, temp in ((soft_weight, temperature), (hard_weight, 1.0)):
                scaled = z[k, b] / temp
                shift = scaled.max()
                log_prob = scaled[target[b]] - shift - torch.log(torch.exp(scaled - shift).sum())
                out[b] += -weight * log_prob
    return out


def naive_ensemble_ce_grad(logits, target, temperature, soft_weight, hard_weight):
    """d loss_b / d z_kb = soft / T (softmax(z/T) - e_y) + hard (softmax(z) - e_y)."""
    z = logits.double()
    grad = torch.zeros_like(z)
    num_models, batch, num_classes = z.shape
    for b in range(batch):
        onehot = torch.zeros(num_classes, dtype=torch.float64)
        onehot[target[b]] = 1
        for k in range(num_models):
            p_t = torch.softmax(z[k, b] / temperature, dim=0)
            p_1 = torch.softmax(z[k, b], dim=0)
            grad[k, b] = soft_weight / temperature * (p_t - onehot) + hard_weight * (p_1 - onehot)
    return grad


def naive_sign_momentum_step(x_adv, x_orig, grad, momentum, step_size, eps, decay, grad_norm, norm, clip):
    """MI-FGSM (Dong et al. 2018) update with projection, one sample at a time.
    Returns new (x_adv, momentum) in float64."""
    xs, ms = [], []
    for b in range(x_adv.shape[0]):
        x, x0, gr = x_adv[b].double(), x_orig[b].double(), grad[b].double()
        step = float(step_size[b]) if torch.is_tensor(step_size) else step_size
        radius = float(eps[b]) if torch.is_tensor(eps) else eps
        if grad_norm == "l1":
            gr = gr / max(gr.abs().sum().item(), 1e-12)
        g = gr if momentum is None else decay * momentum[b].double() + gr
        if norm == "linf":
            x = x + step * torch.sign(g)
            x = torch.minimum(torch.maximum(x, x0 - radius), x0 + radius)
        else:
            x = x + step * g / max(g.norm().item(), 1e-12)
            delta = x - x0
            if delta.norm().item() > radius:
                delta = delta * (radius / delta.norm().item())
            x = x0 + delta
        if clip is not None:
            x = x.clamp(*clip)
        xs.append(x)
        ms.append(g)
    return torch.stack(xs), (None if momentum is None else torch.stack(ms))


def naive_conv2d_input_grad(grad_output, weight, input_size, padding):
    """The input gradient of a stride-1 conv2d from its definition, y[b, co, oy, ox] = sum_{ci, u, v}
    x[b, ci, oy + u - ph, ox + v - pw] w[co, ci, u, v]: each output element sends grad * w back to the input
    pixel it read, skipping the zero padding. Loops over output pixels and taps, float64."""
    g, w = grad_output.double(), weight.double()
    batch, c_out, out_h, out_w = g.shape
    _, c_in, k_h, k_w = w.shape
    (height, width), (p_h, p_w) = input_size, padding
    grad_x = torch.zeros(batch, c_in, height, width, dtype=torch.float64)
    for oy in range(out_h):
        for ox in range(out_w):
            for u in range(k_h):
                for v in range(k_w):
                    iy, ix = oy + u - p_h, ox + v - p_w
                    if 0 <= iy < height and 0 <= ix < width:
                        # [B, C_out] x [C_out, C_in] -> [B, C_in]
                        grad_x[:, :, iy, ix] += g[:, :, oy, ox] @ w[:, :, u, v]
    return grad_x
