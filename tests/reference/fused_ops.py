"""Naive implementations of the fused ops, written from the formulas in the papers and the ops' documented
conventions, independently of robustkit/ops/reference.py: explicit per-model, per-sample (and, for C&W, per-element)
loops, the textbook softmax and Adam, all in float64."""
from __future__ import annotations

import math

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
    if not xs:  # an empty batch
        return x_adv.double().clone(), (None if momentum is None else momentum.double().clone())
    return torch.stack(xs), (None if momentum is None else torch.stack(ms))


def naive_conv2d_input_grad(grad_output, weight, input_size, padding):
    """The input gradient of a stride-1 conv2d from its definition, y[b, co, oy, ox] = sum_{ci, u, v}
    x[b, ci, oy + u - ph, ox + v - pw] w[co, ci, u, v]: each output element sends grad * w back to the input
    pixel it read, skipping the zero padding. One tap (u, v) at a time: the output pixels whose tap lands
    inside the image form a rectangle, which is shifted onto the input; float64."""
    g, w = grad_output.double(), weight.double()
    batch, c_out, out_h, out_w = g.shape
    _, c_in, k_h, k_w = w.shape
    (height, width), (p_h, p_w) = input_size, padding
    grad_x = torch.zeros(batch, c_in, height, width, dtype=torch.float64)
    for u in range(k_h):
        for v in range(k_w):
            # output rows oy with 0 <= oy + u - p_h < height (and the same for columns)
            oy0, oy1 = max(0, p_h - u), min(out_h, height + p_h - u)
            ox0, ox1 = max(0, p_w - v), min(out_w, width + p_w - v)
            if oy0 >= oy1 or ox0 >= ox1:
                continue
            # [B, C_out, h, w] x [C_out, C_in] -> [B, C_in, h, w]
            contribution = torch.einsum("bohw,oi->bihw", g[:, :, oy0:oy1, ox0:ox1], w[:, :, u, v])
            grad_x[:, :, oy0 + u - p_h:oy1 + u - p_h, ox0 + v - p_w:ox1 + v - p_w] += contribution
    return grad_x


def naive_deepfool_step(f, w, norm):
    """DeepFool's step to the nearest linearised boundary (Moosavi-Dezfooli et al. 2016, Alg. 2 / Eq. 8 for
    L2, Sec. 3.3 for L-inf with the dual norm q = 1), one sample and one candidate at a time, float64, with
    the op's documented conventions: ties go to the lowest candidate, a NaN distance never wins, norms are
    floored at 1e-12 and the step is pushed 1e-4 past the boundary. Written with torch ops on scalars so
    autograd gives its gradient with the chosen candidate held fixed. Returns ``(step [B, D], index [B])``."""
    f, w = f.double(), w.double()
    batch, candidates, dim = w.shape
    steps, chosen = [], []
    for b in range(batch):
        best, best_k = None, 0
        for k in range(candidates):
            wk = w[b, k].detach()
            dual = float(wk.norm()) if norm == "l2" else float(wk.abs().sum())
            dist = abs(float(f[b, k])) / max(dual, 1e-12)
            if dist == dist and (best is None or dist < best):  # NaN != NaN: a NaN distance never wins
                best, best_k = dist, k
        wl, fl = w[b, best_k], f[b, best_k]
        if norm == "l2":
            squared = (wl * wl).sum()
            denom = squared if float(squared) > 1e-24 else squared.new_tensor(1e-24)
            steps.append((fl.abs() + 1e-4) / denom * wl)
        else:
            l1 = wl.abs().sum()
            denom = l1 if float(l1) > 1e-12 else l1.new_tensor(1e-12)
            steps.append((fl.abs() + 1e-4) / denom * torch.sign(wl))
        chosen.append(best_k)
    step = torch.stack(steps) if steps else w.new_zeros(0, dim)
    return step, torch.tensor(chosen, dtype=torch.int64)


def naive_cw_l2_step(w, x_orig, loss_grad, success, exp_avg, exp_avg_sq, best_adv, best_l2sq, *, step, lr,
                     betas, adam_eps, clip):
    """One iteration of Carlini & Wagner's L2 attack (2017, Sec. V.A) with Adam (Kingma & Ba 2015, Alg. 1),
    one sample and one element at a time in Python floats. The box is the change of variables
    ``x = lo + (hi - lo) (tanh(w) + 1) / 2``, so ``dx/dw = (hi - lo) / 2 (1 - tanh(w)^2)``; the gradient of
    ``||x - x0||^2 + c f(x)`` with ``d(c f)/dx = loss_grad`` is ``(2 (x - x0) + loss_grad) dx/dw``. The
    best-so-far update uses the iterate the step starts from and a strict ``<``. Returns the new state as
    float64 tensors (w, x, exp_avg, exp_avg_sq, best_adv, best_l2sq), that iterate's ``l2sq`` and whether
    the best-so-far was replaced (``improved``)."""
    lo, hi = clip
    beta1, beta2 = betas
    shape = w.shape
    batch = shape[0]
    per_sample = math.prod(shape[1:])
    flat = [t.double().reshape(batch, per_sample).tolist()
            for t in (w, x_orig, loss_grad, exp_avg, exp_avg_sq, best_adv)]
    out = {name: [] for name in ("w", "x", "exp_avg", "exp_avg_sq", "best_adv")}
    best_out, l2_out, improved = [], [], []
    for b in range(batch):
        wb, x0, lg, m, v, best = (rows[b] for rows in flat)
        x = [lo + (hi - lo) * (math.tanh(wi) + 1) / 2 for wi in wb]
        l2sq = sum((xi - x0i) ** 2 for xi, x0i in zip(x, x0))
        improved.append(bool(success[b]) and l2sq < float(best_l2sq[b]))
        if improved[-1]:
            best, best_l2 = list(x), l2sq
        else:
            best_l2 = float(best_l2sq[b])
        w_new, m_new, v_new = [], [], []
        for i in range(len(wb)):
            dxdw = (hi - lo) / 2 * (1 - math.tanh(wb[i]) ** 2)
            g = (2 * (x[i] - x0[i]) + lg[i]) * dxdw
            mi = beta1 * m[i] + (1 - beta1) * g
            vi = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = mi / (1 - beta1 ** step), vi / (1 - beta2 ** step)
            w_new.append(wb[i] - lr * m_hat / (math.sqrt(v_hat) + adam_eps))
            m_new.append(mi)
            v_new.append(vi)
        out["w"].append(w_new)
        out["x"].append([lo + (hi - lo) * (math.tanh(wi) + 1) / 2 for wi in w_new])
        out["exp_avg"].append(m_new)
        out["exp_avg_sq"].append(v_new)
        out["best_adv"].append(best)
        best_out.append(best_l2)
        l2_out.append(l2sq)
    result = {k: torch.tensor(v, dtype=torch.float64).reshape(shape) for k, v in out.items()}
    result["best_l2sq"] = torch.tensor(best_out, dtype=torch.float64).reshape(batch)
    result["l2sq"] = torch.tensor(l2_out, dtype=torch.float64).reshape(batch)
    result["improved"] = torch.tensor(improved, dtype=torch.bool).reshape(batch)
    return result
