"""Deep Defense (Yan et al. 2018): DeepFool's perturbation as a differentiable regulariser, on any model.

The objective is the seed's Eq. 6 on top of the classification loss::

    loss = CE(f(x), y) + lam * mean_k [ exp(-c * rho_k)  if k is classified correctly   (the set T)
                                        exp( d * rho_k)  if it is misclassified        (the set F) ]
    rho_k = || dx_k ||_p / || x_k ||_p

with ``dx_k`` the DeepFool perturbation of ``x_k`` unrolled for ``steps`` iterations. The seed builds a
hand-written "reverse" network per architecture to differentiate ``dx`` with respect to the weights. Here the
dependence comes from autograd instead: each iteration's candidate gradients ``w = d f / d x`` are taken with
``create_graph=True``, the step is the fused :func:`robustkit.ops.deepfool_step` (whose backward gives the
step's gradient with respect to ``f`` and ``w``), and backpropagating the loss runs the model's double backward.
So it works on any ``nn.Module`` whose layers PyTorch can differentiate twice.

Like the seed's attack module, DeepFool here attacks the model's *current prediction* (for a misclassified
sample that is the wrong class, and ``d`` then pulls it toward the boundary), over the ``candidates`` classes
with the highest clean logits, and a sample stops contributing new steps once its prediction has changed
(the seed's early exit). The iterates are not clipped to [0, 1]: clipping would cut the gradient, and the seed's
regulariser does not clip either.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from robustkit.attacks.deepfool import candidate_classes
from robustkit.ops import deepfool_step
from robustkit.training.objective import ObjectiveOutput, check_images, unwrap_model

_NORMS = {"l2": 2.0, "linf": float("inf")}
_JACOBIANS = ("loop", "batched")


def _number(owner: str, name: str, value, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ValueError(f"{owner}: {name} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


class DeepDefense:
    """The Deep Defense objective ``objective(model, x, y) -> ObjectiveOutput``.

    Args:
        lam, c, d: Eq. 6's lambda, c and d (the seed's MNIST values: 15, 25, 5).
        steps: DeepFool iterations unrolled per batch (each costs one forward, ``candidates - 1`` input
            gradients and, in the loss's backward, their double backward).
        overshoot: DeepFool's eta: ``dx = (1 + overshoot) * sum_i r_i``.
        candidates: classes considered, the predicted one included (10 in the seed); ``None`` for all.
        norm: ``"l2"`` (the seed's rho_2) or ``"linf"``.
        jacobian: how the candidates' input gradients are taken: ``"loop"``, one ``create_graph`` backward per
            candidate (fastest on convolutional models on CPU: PyTorch's vmap has no batching rule for their
            double backward), or ``"batched"``, one vmapped backward over all candidates
            (``is_grads_batched``; 1.3x faster on the seed's MLP on CPU, ``bench/deep_defense.py``).
        layers: names of submodules (``"fc1"``) or parameters (``"fc1.weight"``) of the model: only their
            parameters receive the regulariser's gradient, every other parameter enters the unrolled DeepFool
            as a constant, while the cross-entropy still trains all of them. The seed's layer-wise experiment
            (Fig. 4) regularises one layer at a time: ``layers=["fc1"]``. ``None`` (default): every parameter.
            It costs one more forward per batch (the cross-entropy's forward cannot be shared).

    The model runs in eval mode while the objective is computed, and its train/eval flags are restored
    afterwards: BatchNorm is frozen during fine-tuning, as in the authors' code, and dropout is off, so that
    the unrolled DeepFool sees one deterministic network.

    ``out.metrics``: ``rho`` (mean ``rho_k`` over the batch), ``regularizer`` (the lambda-weighted term),
    ``ce``, and ``finished_early`` (the fraction of samples whose prediction changed before the last step).
    """

    def __init__(self, lam: float = 15.0, c: float = 25.0, d: float = 5.0, *, steps: int = 5,
                 overshoot: float = 0.02, candidates: Optional[int] = 10, norm: str = "l2",
                 jacobian: str = "loop", layers: Union[str, Sequence[str], None] = None):
        self.lam = _number("DeepDefense", "lam", lam)
        self.c = _number("DeepDefense", "c", c)
        self.d = _number("DeepDefense", "d", d)
        self.overshoot = _number("DeepDefense", "overshoot", overshoot)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"DeepDefense: steps must be an int >= 1, got {steps!r}")
        if candidates is not None and (isinstance(candidates, bool) or not isinstance(candidates, int)
                                       or candidates < 2):
            raise ValueError(f"DeepDefense: candidates must be an int >= 2 or None, got {candidates!r}")
        if norm not in _NORMS:
            raise ValueError(f"DeepDefense: norm must be one of {tuple(_NORMS)}, got {norm!r}")
        if jacobian not in _JACOBIANS:
            raise ValueError(f"DeepDefense: jacobian must be one of {_JACOBIANS}, got {jacobian!r}")
        if isinstance(layers, str):
            layers = (layers,)
        if layers is not None:
            layers = tuple(layers) if isinstance(layers, (list, tuple)) else layers
            if not isinstance(layers, tuple) or not layers or not all(isinstance(n, str) and n for n in layers):
                raise ValueError(f"DeepDefense: layers must be None, a name or a non-empty list of names, "
                                 f"got {layers!r}")
        self.steps, self.candidates, self.norm, self.jacobian = steps, candidates, norm, jacobian
        self.layers: Optional[Tuple[str, ...]] = layers
        self._checked: set = set()

    def __repr__(self) -> str:
        return (f"DeepDefense(lam={self.lam}, c={self.c}, d={self.d}, steps={self.steps}, "
                f"overshoot={self.overshoot}, candidates={self.candidates}, norm={self.norm!r}"
                + (f", layers={list(self.layers)!r})" if self.layers is not None else ")"))

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        check_images("DeepDefense", x)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            return self._objective(model, x, y)
        finally:
            for m, training in modes:
                m.training = training

    def _objective(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        x0 = x.detach().requires_grad_(self.layers is None)
        logits = model(x0)
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"DeepDefense: the model must return [B, classes] logits, got {list(logits.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"DeepDefense: y must be [B] = [{x.shape[0]}] labels, got {list(y.shape)}")
        ce = F.cross_entropy(logits, y)
        regularized, reg_logits = model, logits          # DeepFool's first step shares the CE's forward
        if self.layers is not None:
            regularized = self._only_layers(unwrap_model(model))
            x0 = x.detach().requires_grad_(True)
            reg_logits = regularized(x0)
        try:
            dx, finished = self.perturbation(regularized, x0, reg_logits)
        except RuntimeError as err:
            raise _twice_differentiable_error(unwrap_model(model), x, err) from err
        p = _NORMS[self.norm]
        rho = dx.flatten(1).norm(p=p, dim=1) / x.flatten(1).norm(p=p, dim=1).clamp_min(1e-12)
        correct = logits.detach().argmax(1) == y
        penalty = torch.where(correct, torch.exp(-self.c * rho), torch.exp(self.d * rho))
        regularizer = self.lam * penalty.mean()
        key = id(unwrap_model(model))
        if key not in self._checked:
            try:
                _require_weight_dependence([q for _, q in self.selected_parameters(model)], regularizer)
            except RuntimeError as err:
                raise _twice_differentiable_error(unwrap_model(model), x, err) from err
            self._checked.add(key)
        return ObjectiveOutput(loss=ce + regularizer, logits=logits,
                               metrics={"ce": ce.detach(), "regularizer": regularizer.detach(),
                                        "rho": rho.detach().mean(), "finished_early": finished})

    def selected_parameters(self, model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of ``model`` that receive the regulariser's gradient (all without ``layers``)."""
        named = list(unwrap_model(model).named_parameters())
        if self.layers is None:
            return named
        for layer in self.layers:
            if not any(n == layer or n.startswith(layer + ".") for n, _ in named):
                names = sorted({n.rsplit(".", 1)[0] if "." in n else n for n, _ in named})
                raise ValueError(f"DeepDefense: layers name {layer!r} matches no parameter of the model "
                                 f"(its layers: {', '.join(names)})")
        return [(n, p) for n, p in named
                if any(n == layer or n.startswith(layer + ".") for layer in self.layers)]

    def _only_layers(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """``model`` as the regulariser sees it with ``layers``: every other parameter detached."""
        keep = {id(p) for _, p in self.selected_parameters(model)}
        params = {n: p if id(p) in keep else p.detach() for n, p in model.named_parameters()}
        return lambda inp: functional_call(model, params, (inp,))

    def perturbation(self, model: Callable[[Tensor], Tensor], x0: Tensor, logits: Tensor) -> Tuple[Tensor, float]:
        """DeepFool's ``dx`` ``[B, ...]`` unrolled with the graph kept (differentiable in the weights), and the
        fraction of samples that finished early (their prediction changed before ``steps`` iterations).
        ``x0`` requires grad and ``logits = model(x0)``."""
        batch = x0.shape[0]
        pred = logits.detach().argmax(1)
        classes = candidate_classes(logits.detach(), pred, self.candidates, "DeepDefense")   # [B, K]
        r_total = x0.new_zeros(batch, x0[0].numel())
        active = torch.arange(batch, device=x0.device)
        for i in range(self.steps):
            if i == 0:
                x_a, logits_a = x0, logits                                       # the CE's forward, shared
            else:
                x_a = x0.detach()[active] + (1 + self.overshoot) * r_total[active].view_as(x0[active])
                logits_a = model(x_a)
            rows = (logits_a.detach().argmax(1) == pred[active]).nonzero().squeeze(1)
            if rows.numel() == 0:
                active = active[:0]
                break
            # samples whose prediction changed stop contributing new steps (the seed's early exit)
            f, w = self._linearize(x_a, logits_a, rows, pred[active][rows], classes[active][rows])
            active = active[rows]
            step, _ = deepfool_step(f, w, norm=self.norm)
            r_total = r_total.index_add(0, active, step)
        finished = 1.0 - active.numel() / max(batch, 1)
        return ((1 + self.overshoot) * r_total).view_as(x0), finished

    def _linearize(self, x_a: Tensor, logits: Tensor, rows: Tensor, pred: Tensor,
                   classes: Tensor) -> Tuple[Tensor, Tensor]:
        """``f [Ba, K]`` and ``w [Ba, K, D]`` of the rows ``rows`` of ``logits``, with the graph kept."""
        sel = logits[rows]
        f = sel.gather(1, classes) - sel.gather(1, pred.unsqueeze(1))
        if self.jacobian == "batched":
            # cotangent k puts +1 on each row's candidate k and -1 on its prediction: its vmapped backward is
            # the gradient of f[:, k] (rows outside ``rows`` get zero cotangents)
            count = f.shape[1]
            cot = logits.new_zeros(count, *logits.shape)
            index = torch.arange(count, device=logits.device)
            cot[index.view(-1, 1), rows.view(1, -1), classes.t()] += 1
            cot[index.view(-1, 1), rows.view(1, -1), pred.view(1, -1).expand(count, -1)] -= 1
            (g,) = torch.autograd.grad(logits, x_a, grad_outputs=cot, is_grads_batched=True, create_graph=True)
            return f, g[:, rows].flatten(2).transpose(0, 1)
        ws: List[Tensor] = []
        for k in range(f.shape[1]):
            (g,) = torch.autograd.grad(f[:, k].sum(), x_a, create_graph=True, retain_graph=True)
            ws.append(g[rows].flatten(1))
        return f, torch.stack(ws, dim=1)


_ERROR_NODES = ("Error", "DelayedError", "NotImplemented")


def _holds_error_node(tensor: Tensor) -> bool:
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in _ERROR_NODES:
            return True
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


def _require_weight_dependence(params: List[nn.Parameter], regularizer: Tensor) -> None:
    """Deep Defense must never train on a silently zero or truncated gradient. Once per model: the
    regulariser's graph holds no error node (what a ``once_differentiable`` backward leaves behind when it is
    differentiated with ``create_graph``: ``autograd.grad`` to the weights skips it silently, only a full
    ``backward()`` raises), and its gradient reaches the weights."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    if not regularizer.requires_grad:
        raise ValueError("DeepDefense: the regularizer does not depend on the model's weights; a layer of the model "
                         "cannot be differentiated twice")
    if _holds_error_node(regularizer):
        raise RuntimeError("the double-backward graph holds an error node")
    grads = torch.autograd.grad(regularizer, params, retain_graph=True, allow_unused=True)
    if all(g is None or not bool(g.any()) for g in grads) and bool(regularizer.detach() != 0):
        raise ValueError("DeepDefense: the regularizer's gradient with respect to every weight is zero; a layer of the "
                         "model is not twice differentiable (its input gradient does not depend on the weights)")


def _twice_differentiable_error(model: nn.Module, x: Tensor, err: RuntimeError) -> Exception:
    """Name the first leaf layer whose input gradient cannot be differentiated again."""
    inputs = {}

    def capture(module, args, _output):
        inputs.setdefault(module, args[0].detach())

    hooks = [m.register_forward_hook(capture) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    for name, module in model.named_modules():
        if module not in inputs or not inputs[module].is_floating_point():
            continue
        inp = inputs[module].clone().requires_grad_(True)
        try:
            out = module(inp)
            # a cotangent that requires grad, as the one flowing into this layer inside the model's double
            # backward does (with a constant one, a once_differentiable backward leaves no error node)
            cotangent = torch.ones_like(out, requires_grad=True)
            (g,) = torch.autograd.grad(out, inp, grad_outputs=cotangent, create_graph=True)
            if g.requires_grad and _holds_error_node(g):
                raise RuntimeError("its backward is marked once_differentiable")
            if g.requires_grad:
                torch.autograd.grad(g.sum(), [inp, cotangent, *module.parameters()], allow_unused=True)
        except RuntimeError as inner:
            return ValueError(f"DeepDefense: layer {name!r} ({type(module).__name__}) cannot be differentiated "
                              f"twice: {str(inner).splitlines()[0]}")
    return ValueError(f"DeepDefense: the model cannot be differentiated twice: {str(err).splitlines()[0]}")
