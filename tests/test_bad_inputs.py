"""One table of bad inputs to every public entry point: attacks (constructor and call), ops, KNNLabeler,
``evaluate``, the defenses, ``training.fit`` and the CLI.

Each row is ``(call, error type, pattern)``: the call must raise that type, with a one-line message matching
the pattern, which names the argument at fault (so a user can tell *which* input was wrong). A row marked
``xfail(strict=True)`` is a known defect (an unclear error, or none): it starts failing the suite, and so gets
its mark removed, once the library gives the clear error.
"""
from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
from torch import nn

import robustkit.ops as ops
from robustkit import attacks as A
from robustkit import defenses as D
from tests._tiny import tiny_batch, tiny_cnn


# ---- inputs ---------------------------------------------------------------------------------------------

def _m():
    return tiny_cnn()


def _x(**changes):
    x, _ = tiny_batch(4)
    for key, value in changes.items():
        if key == "nan":
            x[1, 0, 2, 2] = math.nan
        elif key == "inf":
            x[0, 0, 0, 0] = math.inf
    return x


def _y():
    return tiny_batch(4)[1]


def _x_with(value):
    x = _x()
    x[0, 0, 0, 0] = value
    return x


def _attack_call(make, x=None, y=None, target=None):
    """``make(model)(x, y, target)`` with the defaults for any input not given."""
    attack = make(_m())
    return attack.run(_x() if x is None else x, _y() if y is None else y, target)


class CliError(Exception):
    """A CLI call that exited with a non-zero status; the message is what it printed to stderr."""


def _cli(*argv):
    from robustkit.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    if code:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        raise CliError(lines[-1] if lines else f"exit status {code}")


def _eval_cli(tmp, *extra, out=None):
    args = ["eval", "--model", "robustkit.models:LeNet", "--data", "mnist", "--limit", "4", "--batch-size", "4",
            "--no-report", "--out", str(out or tmp / "out")]
    return _cli(*args, *extra)


def _evaluate(data=None, out=None, **kw):
    from robustkit.eval import evaluate
    from tests._tiny import small_lenet
    import tempfile
    model = small_lenet()
    if data is None:
        from tests._tiny import mnist_images
        data = mnist_images(4)
    out = out or tempfile.mkdtemp(prefix="bad-eval-")
    kw.setdefault("checks", "off")
    return evaluate(model, data, {"fgsm": A.FGSM(model, eps=0.1)}, out=out, progress=False, report=False, **kw)


def _mnist4(nan=False):
    from tests._tiny import mnist_images
    x, y = mnist_images(4)
    x = x.clone()
    if nan:
        x[2, 0, 5, 5] = math.nan
    return x, y


def _knn_fit(x=None, y=None, **kw):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 8, generator=g) if x is None else x
    y = torch.arange(12) % 3 if y is None else y
    return D.KNNLabeler(**{"pca_dim": 4, "backend": "torch", **kw}).fit(x, y)


def _knn_predict(q):
    return _knn_fit().predict(q)


def _fit(**kw):
    from robustkit.training import fit
    x, y = tiny_batch(8)
    return fit(tiny_cnn(), (x, y), progress=False, batch_size=4, **kw)


def _ce(logits=None, target=None, **kw):
    logits = torch.randn(2, 4, 5) if logits is None else logits
    target = torch.tensor([0, 1, 2, 3]) if target is None else target
    return ops.ensemble_temperature_ce(logits, target, **kw)


def _sign(x_adv=None, grad=None, **kw):
    x0 = torch.rand(3, 6)
    xa = x0.clone() if x_adv is None else x_adv
    g = torch.randn(3, 6) if grad is None else grad
    kw.setdefault("step_size", 0.1)
    kw.setdefault("eps", 0.3)
    return ops.sign_momentum_step(xa, x0, g, None, **kw)


def _deepfool(f=None, w=None, **kw):
    f = torch.randn(3, 4) if f is None else f
    w = torch.randn(3, 4, 6) if w is None else w
    return ops.deepfool_step(f, w, **kw)


def _conv(grad=None, weight=None, input_size=(6, 6), padding=(0, 0)):
    grad = torch.randn(2, 4, 4, 4) if grad is None else grad
    weight = torch.randn(4, 1, 3, 3) if weight is None else weight
    return ops.conv2d_input_grad(grad, weight, input_size, padding)


def _cw(**changes):
    B, D_ = 2, 5
    x0 = torch.rand(B, D_)
    w = torch.atanh((2 * x0 - 1) * 0.999)
    args = dict(w=w.clone(), x=x0.clone(), exp_avg=torch.zeros(B, D_), exp_avg_sq=torch.zeros(B, D_),
                best_adv=x0.clone(), best_l2sq=torch.full((B,), math.inf), x_orig=x0, loss_grad=torch.randn(B, D_),
                success=torch.ones(B, dtype=torch.bool))
    kw = {"step": 1}
    for key, value in changes.items():
        if key in args:
            args[key] = value(args) if callable(value) else value
        else:
            kw[key] = value
    return ops.cw_l2_step(*args.values(), **kw)


# ---- the table ------------------------------------------------------------------------------------------

V, T, R = ValueError, TypeError, RuntimeError   # ops raise RuntimeError (TORCH_CHECK in the C++ op)
PGD1 = lambda m: A.PGD(m, eps=0.1, steps=1, step_size=0.05)   # noqa: E731

CASES = [
    # attacks: constructors
    ("FGSM eps<0", lambda: A.FGSM(_m(), eps=-0.1), V, r"eps"),
    ("FGSM eps nan", lambda: A.FGSM(_m(), eps=math.nan), V, r"eps"),
    ("FGSM eps str", lambda: A.FGSM(_m(), eps="0.1"), (V, T), r"eps"),
    ("FGSM temperature 0", lambda: A.FGSM(_m(), eps=0.1, temperature=0.0), V, r"temperature"),
    ("FGSM temperature nan", lambda: A.FGSM(_m(), eps=0.1, temperature=math.nan), V, r"temperature"),
    ("FGSM temperature 1e-40 (float32 call)", lambda: _attack_call(lambda m: A.FGSM(m, eps=0.1, temperature=1e-40)),
     RuntimeError, r"temperature"),
    ("FGSM eot 0", lambda: A.FGSM(_m(), eps=0.1, eot=0), V, r"eot"),
    ("FGSM unknown option", lambda: A.FGSM(_m(), eps=0.1, bogus=1), T, r"bogus"),
    ("FGSM batch_size 0", lambda: A.FGSM(_m(), eps=0.1, batch_size=0), V, r"batch_size"),
    ("FGSM seed str", lambda: A.FGSM(_m(), eps=0.1, seed="abc"), T, r"seed"),
    ("FGSM attack_mode", lambda: A.FGSM(_m(), eps=0.1, attack_mode="test"), V, r"attack_mode"),
    ("FGSM conv_input_grad", lambda: A.FGSM(_m(), eps=0.1, conv_input_grad="cudnn"), V, r"conv_input_grad"),
    ("FGSM model and models", lambda: A.FGSM(_m(), models=[_m()], eps=0.1), V, r"model"),
    ("FGSM model not a module", lambda: A.FGSM("lenet", eps=0.1), (T, V), r"model"),
    ("IFGSM steps 0", lambda: A.IFGSM(_m(), eps=0.1, steps=0), V, r"steps"),
    ("IFGSM steps float", lambda: A.IFGSM(_m(), eps=0.1, steps=2.5), (V, T), r"steps"),
    ("PGD norm unknown", lambda: A.PGD(_m(), eps=0.1, norm="l3"), V, r"norm"),
    ("PGD step_size<0", lambda: A.PGD(_m(), eps=0.1, step_size=-0.01), V, r"step_size"),
    ("PGD step_size nan", lambda: A.PGD(_m(), eps=0.1, step_size=math.nan), V, r"step_size"),
    ("PGD steps -1", lambda: A.PGD(_m(), eps=0.1, steps=-1), V, r"steps"),
    ("PGD eps inf", lambda: A.PGD(_m(), eps=math.inf), V, r"eps"),
    ("MIFGSM decay<0", lambda: A.MIFGSM(_m(), eps=0.1, decay=-1.0), V, r"decay"),
    ("MIFGSM decay nan", lambda: A.MIFGSM(_m(), eps=0.1, decay=math.nan), V, r"decay"),
    ("DMIFGSM temperature<0", lambda: A.DMIFGSM(_m(), temperature=-1.0), V, r"temperature"),
    ("DMIFGSM weights wrong length", lambda: A.DMIFGSM(models=[_m(), _m()], weights=[1.0]), V, r"weights"),
    ("DeepFool steps 0", lambda: A.DeepFool(_m(), steps=0), V, r"steps"),
    ("DeepFool overshoot<0", lambda: A.DeepFool(_m(), overshoot=-0.1), V, r"overshoot"),
    ("DeepFool norm unknown", lambda: A.DeepFool(_m(), norm="l7"), V, r"norm"),
    ("DeepFool candidates 1", lambda: A.DeepFool(_m(), candidates=1), V, r"candidates"),
    ("DeepFool jacobian unknown", lambda: A.DeepFool(_m(), jacobian="magic"), V, r"jacobian"),
    ("CW steps 0", lambda: A.CW(_m(), steps=0), V, r"steps"),
    ("CW binary_search_steps 0", lambda: A.CW(_m(), binary_search_steps=0), V, r"binary_search_steps"),
    ("CW lr<0", lambda: A.CW(_m(), lr=-0.01), V, r"lr"),
    ("CW initial_const nan", lambda: A.CW(_m(), initial_const=math.nan), V, r"initial_const"),
    ("CW confidence<0", lambda: A.CW(_m(), confidence=-1.0), V, r"confidence"),
    ("CW norm unknown", lambda: A.CW(_m(), norm="l1"), V, r"norm"),
    ("GAP eps 0", lambda: A.GAP(_m(), eps=0.0), V, r"eps"),
    ("GAP eps>1", lambda: A.GAP(_m(), eps=2.0), V, r"eps"),
    ("GAP mode unknown", lambda: A.GAP(_m(), mode="both"), V, r"mode"),
    ("GAP loss unknown", lambda: A.GAP(_m(), loss="hinge"), V, r"loss"),
    ("APGD restarts 0", lambda: A.APGD(_m(), restarts=0), V, r"restarts"),
    ("APGD steps 0", lambda: A.APGD(_m(), steps=0), V, r"steps"),
    ("APGD eot 0", lambda: A.APGD(_m(), eot=0), V, r"eot"),
    ("APGD loss unknown", lambda: A.APGD(_m(), loss="mse"), V, r"loss"),
    ("APGD rho>1", lambda: A.APGD(_m(), rho=1.5), V, r"rho"),
    ("APGD eps nan", lambda: A.APGD(_m(), eps=math.nan), V, r"eps"),
    ("APGDT target 0", lambda: A.APGDT(_m(), target=0), V, r"target"),
    ("Square queries 0", lambda: A.Square(_m(), queries=0), V, r"queries"),
    ("Square p_init 0", lambda: A.Square(_m(), p_init=0.0), V, r"p_init"),
    ("Square restarts 0", lambda: A.Square(_m(), restarts=0), V, r"restarts"),
    ("FAB steps 0", lambda: A.FAB(_m(), steps=0), V, r"steps"),
    ("FAB norm unknown", lambda: A.FAB(_m(), norm="l5"), V, r"norm"),
    ("FAB restarts 0", lambda: A.FAB(_m(), restarts=0), V, r"restarts"),
    ("FAB eta<1", lambda: A.FAB(_m(), eta=0.5), V, r"eta"),
    ("AutoAttack version unknown", lambda: A.AutoAttack(_m(), version="plus"), V, r"version"),
    ("AutoAttack norm unknown", lambda: A.AutoAttack(_m(), norm="l3"), V, r"norm"),
    ("AutoAttack eps<0", lambda: A.AutoAttack(_m(), eps=-1.0), V, r"eps"),
    # attacks: call arguments
    ("PGD x nan", lambda: _attack_call(PGD1, x=_x(nan=True)), V, r"\bx\b"),
    ("FGSM x nan", lambda: _attack_call(lambda m: A.FGSM(m, eps=0.1), x=_x(nan=True)), V, r"\bx\b"),
    ("DeepFool x nan", lambda: _attack_call(lambda m: A.DeepFool(m, steps=2), x=_x(nan=True)), V, r"\bx\b"),
    ("CW x nan", lambda: _attack_call(lambda m: A.CW(m, steps=2, binary_search_steps=1), x=_x(nan=True)), V,
     r"\bx\b"),
    ("PGD x inf", lambda: _attack_call(PGD1, x=_x(inf=True)), V, r"\bx\b"),
    ("PGD x > 1", lambda: _attack_call(PGD1, x=_x_with(1.5)), V, r"\bx\b"),
    ("PGD x < 0", lambda: _attack_call(PGD1, x=_x_with(-0.5)), V, r"\bx\b"),
    ("PGD x 3-D", lambda: _attack_call(PGD1, x=_x()[:, 0]), V, r"\bx\b"),
    ("PGD x uint8", lambda: _attack_call(PGD1, x=(_x() * 255).to(torch.uint8)), (V, T), r"\bx\b"),
    ("PGD x float64 for a float32 model", lambda: _attack_call(PGD1, x=_x().double()), (V, T), r"\bx\b"),
    ("PGD x list", lambda: _attack_call(PGD1, x=_x().tolist()), (V, T), r"\bx\b"),
    ("PGD y float", lambda: _attack_call(PGD1, y=_y().float()), (V, T), r"\by\b"),
    ("PGD y 2-D", lambda: _attack_call(PGD1, y=_y()[:, None]), V, r"\by\b"),
    ("PGD y wrong length", lambda: _attack_call(PGD1, y=_y()[:3]), V, r"\by\b"),
    ("PGD y = num_classes", lambda: _attack_call(PGD1, y=torch.full((4,), 10)), V, r"\by\b"),
    ("PGD y = -1", lambda: _attack_call(PGD1, y=torch.full((4,), -1)), V, r"\by\b"),
    ("PGD target out of range", lambda: _attack_call(PGD1, target=torch.full((4,), 12)), V, r"target"),
    ("PGD target unknown string", lambda: _attack_call(PGD1, target="most_likely"), V, r"target"),
    ("PGD target wrong length", lambda: _attack_call(PGD1, target=torch.zeros(3, dtype=torch.long)), V, r"target"),
    ("DeepFool y = num_classes", lambda: _attack_call(lambda m: A.DeepFool(m, steps=2), y=torch.full((4,), 10)),
     V, r"\by\b"),
    ("DeepFool y = -1", lambda: _attack_call(lambda m: A.DeepFool(m, steps=2), y=torch.full((4,), -1)), V, r"\by\b"),
    ("CW y = num_classes", lambda: _attack_call(lambda m: A.CW(m, steps=2, binary_search_steps=1),
                                                y=torch.full((4,), 10)), V, r"\by\b"),
    ("CW Linf y = num_classes", lambda: _attack_call(lambda m: A.CW(m, norm="linf", steps=2, binary_search_steps=1),
                                                     y=torch.full((4,), 10)), V, r"\by\b",
     # C&W L-inf checks y only after its tau schedule has run (about 10 s here), so the row is slow
     pytest.mark.slow),
    ("Square y = num_classes", lambda: _attack_call(lambda m: A.Square(m, queries=2), y=torch.full((4,), 10)),
     V, r"\by\b"),
    ("APGD x nan", lambda: _attack_call(lambda m: A.APGD(m, steps=2), x=_x(nan=True)), V, r"\bx\b"),
    ("FAB x nan", lambda: _attack_call(lambda m: A.FAB(m, steps=2), x=_x(nan=True)), V, r"\bx\b"),
    ("model returns [B]", lambda: _attack_call(lambda m: A.FGSM(nn.Sequential(m, nn.Flatten(0)), eps=0.1)), V,
     r"models\[0\]"),
    ("model returns int64", lambda: _attack_call(lambda m: A.FGSM(_IntLogits(m), eps=0.1)), V, r"models\[0\]"),
    # ops
    ("ce target float", lambda: _ce(target=torch.zeros(4)), R, r"target"),
    ("ce target out of range", lambda: _ce(target=torch.tensor([0, 1, 2, 5])), R, r"target"),
    ("ce target -1", lambda: _ce(target=torch.tensor([0, 1, 2, -1])), R, r"target"),
    ("ce target wrong length", lambda: _ce(target=torch.tensor([0, 1])), R, r"target"),
    ("ce logits 2-D", lambda: _ce(logits=torch.randn(4, 5)), R, r"logits"),
    ("ce logits int", lambda: _ce(logits=torch.zeros(2, 4, 5, dtype=torch.long)), R, r"logits"),
    ("ce temperature nan", lambda: _ce(temperature=math.nan), R, r"temperature"),
    ("ce temperature inf", lambda: _ce(temperature=math.inf), R, r"temperature"),
    ("ce temperature 0", lambda: _ce(temperature=0.0), R, r"temperature"),
    ("ce temperature 1e-40 float32", lambda: _ce(temperature=1e-40), R, r"temperature"),
    ("ce reduction unknown", lambda: _ce(reduction="max"), V, r"reduction"),
    ("ce fusion unknown", lambda: _ce(fusion="product"), V, r"fusion"),
    ("ce weights wrong length", lambda: _ce(fusion="logits", weights=[1.0, 2.0, 3.0]), (V, R), r"weights"),
    ("ce_grad target out of range", lambda: ops.ensemble_temperature_ce_grad(torch.randn(2, 4, 5),
                                                                             torch.tensor([0, 1, 9, 3])), R, r"target"),
    ("private ce backward target out of range", lambda: _private_ce_backward(10), R, r"target"),
    ("private ce backward target -100000", lambda: _private_ce_backward(-100000), R, r"target"),
    ("sign step eps<0", lambda: _sign(eps=-0.1), V, r"eps"),
    ("sign step step_size nan", lambda: _sign(step_size=math.nan), R, r"step_size"),
    ("sign step per-sample step_size nan", lambda: _sign(step_size=torch.tensor([0.1, math.nan, 0.1])), R,
     r"step_size"),
    ("sign step per-sample eps wrong length", lambda: _sign(eps=torch.tensor([0.1, 0.2])), R, r"eps"),
    ("sign step grad shape", lambda: _sign(grad=torch.randn(3, 5)), R, r"grad"),
    ("sign step norm unknown", lambda: _sign(norm="l3"), R, r"norm"),
    ("sign step grad_norm unknown", lambda: _sign(grad_norm="l7"), R, r"grad_norm"),
    ("sign step x_adv float64 vs float32", lambda: _sign(x_adv=torch.rand(3, 6, dtype=torch.float64)), R,
     r"x_adv|x_orig"),
    ("sign step x_adv is x_orig", lambda: _sign_aliased(), R, r"x_adv"),
    ("deepfool_step norm unknown", lambda: _deepfool(norm="l1"), V, r"norm"),
    ("deepfool_step w shape", lambda: _deepfool(w=torch.randn(3, 5, 6)), R, r"\bw\b"),
    ("deepfool_step f 1-D", lambda: _deepfool(f=torch.randn(4)), R, r"\bf\b"),
    ("deepfool_step f int", lambda: _deepfool(f=torch.zeros(3, 4, dtype=torch.long)), R, r"\bf\b"),
    ("cw step w int", lambda: _cw(w=lambda a: a["w"].long()), R, r"\bw\b"),
    ("cw step loss_grad shape", lambda: _cw(loss_grad=torch.randn(2, 4)), R, r"loss_grad"),
    ("cw step success float", lambda: _cw(success=torch.ones(2)), R, r"success"),
    ("cw step step 0", lambda: _cw(step=0), R, r"step"),
    ("cw step lr nan", lambda: _cw(lr=math.nan), R, r"\blr\b"),
    ("cw step beta1 = 1", lambda: _cw(betas=(1.0, 0.999)), R, r"beta"),
    ("cw step betas one value", lambda: _cw(betas=(0.9,)), V, r"betas"),
    ("cw step exp_avg is exp_avg_sq", lambda: _cw_aliased(), R, r"exp_avg"),
    ("conv grad_output 3-D", lambda: _conv(grad=torch.randn(4, 4, 4)), R, r"grad_output"),
    ("conv weight channels", lambda: _conv(weight=torch.randn(3, 1, 3, 3)), R, r"weight"),
    ("conv input_size mismatch", lambda: _conv(input_size=(7, 7)), R, r"grad_output|input_size"),
    ("conv input_size strings", lambda: _conv(input_size="ab"), T, r"input_size"),
    ("conv input_size floats", lambda: _conv(input_size=(6.0, 6.0)), T, r"input_size"),
    ("conv input_size three values", lambda: _conv(input_size=(6, 6, 1)), R, r"input_size"),
    ("conv padding strings", lambda: _conv(padding=("1", "1")), T, r"padding"),
    ("conv padding<0", lambda: _conv(padding=(-1, 0)), R, r"padding"),
    ("conv padding overflows", lambda: ops.conv2d_input_grad(torch.randn(2, 4, 6, 8, dtype=torch.float64),
                                                             torch.randn(4, 1, 3, 3, dtype=torch.float64), (10, 10),
                                                             (2 ** 63 - 1, 0)), R, r"padding"),
    # KNNLabeler
    ("KNN pca_dim 0", lambda: D.KNNLabeler(pca_dim=0), V, r"pca_dim"),
    ("KNN k 0", lambda: D.KNNLabeler(k=0), V, r"\bk\b"),
    ("KNN backend unknown", lambda: D.KNNLabeler(backend="annoy"), V, r"backend"),
    ("KNN fooling_threshold<0", lambda: D.KNNLabeler(fooling_threshold=-1.0), V, r"fooling_threshold"),
    ("KNN fit x_train nan", lambda: _knn_fit(x=torch.rand(12, 8).index_put_((torch.tensor([3]),), torch.tensor(
        math.nan))), V, r"x_train"),
    ("KNN fit y_train wrong length", lambda: _knn_fit(y=torch.arange(10) % 3), V, r"y_train"),
    ("KNN fit y_train float", lambda: _knn_fit(y=torch.rand(12)), (V, T), r"y_train"),
    ("KNN fit y_train negative", lambda: _knn_fit(y=torch.arange(12) - 1), V, r"y_train"),
    ("KNN predict nan query", lambda: _knn_predict(torch.full((2, 8), math.nan)), V, r"\bx\b"),
    ("KNN predict inf query", lambda: _knn_predict(torch.rand(2, 8).index_fill_(1, torch.tensor([5]), math.inf)), V,
     r"\bx\b"),
    ("KNN fit x_train inf without PCA", lambda: _knn_fit(x=torch.rand(12, 8).index_fill_(0, torch.tensor([7]),
                                                                                         -math.inf), pca_dim=None),
     V, r"x_train"),
    ("KNN predict wrong width", lambda: _knn_predict(torch.rand(2, 9)), V, r"\bx\b|quer|feature"),
    ("KNN predict k > training images", lambda: D.KNNLabeler(pca_dim=None, k=5, backend="torch").fit(
        torch.rand(3, 8), torch.tensor([0, 1, 2])).predict(torch.rand(2, 8)), V, r"\bk\b"),
    # evaluate
    ("evaluate NaN image", lambda: _evaluate(data=_mnist4(nan=True)), V, r"\bx\b|image"),
    ("evaluate labels wrong length", lambda: _evaluate(data=(_mnist4()[0], _mnist4()[1][:3])), V, r"data|label"),
    ("evaluate data not a dataset", lambda: _evaluate(data=[1, 2, 3]), T, r"data"),
    ("evaluate batch_size 0", lambda: _evaluate(batch_size=0), V, r"batch_size"),
    ("evaluate limit 0", lambda: _evaluate(limit=0), V, r"limit"),
    ("evaluate target unknown", lambda: _evaluate(target="most_likely"), V, r"target"),
    ("evaluate metrics unknown", lambda: _evaluate(metrics=("roc",)), V, r"metrics"),
    ("evaluate checks unknown", lambda: _evaluate(checks="none"), V, r"checks"),
    ("evaluate attacks not attacks", lambda: _evaluate_attacks({"f": lambda x, y: x}), T, r"attacks"),
    ("evaluate model returns [B]", lambda: _evaluate_model(nn.Sequential(nn.Flatten(), nn.Linear(784, 1),
                                                                         nn.Flatten(0))), V, r"model"),
    ("evaluate loader of strings", lambda: _evaluate(data=_StringData()), T, r"\bdata\b"),
    ("evaluate labels float", lambda: _evaluate(data=(_mnist4()[0], _mnist4()[1].float())), V, r"\bdata\b"),
    ("evaluate transfer_to model returns [B]", lambda: _evaluate(transfer_to={"flat": nn.Sequential(
        nn.Flatten(), nn.Linear(784, 1), nn.Flatten(0))}), V, r"transfer_to"),
    # defenses
    ("RandomResizePad min_scale 0", lambda: D.RandomResizePad(_m(), 12, min_scale=0.0), V, r"min_scale"),
    ("RandomResizePad min>max", lambda: D.RandomResizePad(_m(), 12, min_scale=1.0, max_scale=0.5), V, r"min_scale"),
    ("RandomResizePad mode unknown", lambda: D.RandomResizePad(_m(), 12, mode="bicubic"), V, r"mode"),
    ("RandomResizePad out_size 0", lambda: D.RandomResizePad(_m(), 0), V, r"out_size"),
    ("DUNet channels 0", lambda: D.DUNet(channels=0), V, r"channels"),
    ("DUNet widths one", lambda: D.DUNet(channels=1, widths=(4,)), V, r"widths"),
    ("GuidedDenoiser shape", lambda: D.GuidedDenoiser(nn.Conv2d(1, 2, 1), _m())(_x()), V, r"denoiser"),
    ("ScoreEnsemble empty", lambda: D.ScoreEnsemble([]), V, r"models"),
    ("ScoreEnsemble combine unknown", lambda: D.ScoreEnsemble([_m()], combine="vote"), V, r"combine"),
    ("DeepDefense lam<0", lambda: D.DeepDefense(lam=-1.0), V, r"lam"),
    ("DeepDefense steps 0", lambda: D.DeepDefense(steps=0), V, r"steps"),
    ("DeepDefense norm unknown", lambda: D.DeepDefense(norm="l3"), V, r"norm"),
    ("AdversarialTraining attack not an attack", lambda: D.AdversarialTraining("pgd"), T, r"attack"),
    ("AdversarialTraining clean_weight 2", lambda: D.AdversarialTraining(PGD1(_m()), clean_weight=2.0), V,
     r"clean_weight"),
    ("TRADES attack_steps 0", lambda: D.TRADES(attack_steps=0), V, r"attack_steps"),
    ("TRADES beta nan", lambda: D.TRADES(beta=math.nan), V, r"beta"),
    ("TRADES eps<0", lambda: D.TRADES(eps=-0.1), V, r"eps"),
    ("FastAdversarialTraining eps<0", lambda: D.FastAdversarialTraining(eps=-0.1), V, r"eps"),
    ("FastAdversarialTraining start_in_box", lambda: D.FastAdversarialTraining(eps=0.1, start_in_box=1), T,
     r"start_in_box"),
    ("FreeAdversarialTraining replays 0", lambda: D.FreeAdversarialTraining(eps=0.1, replays=0), V, r"replays"),
    ("LogitPairing adversarial without attack", lambda: D.LogitPairing(adversarial=0.5), V, r"adversarial"),
    ("LogitPairing clean<0", lambda: D.LogitPairing(clean=-1.0), V, r"clean"),
    ("LogitPairing attack not callable", lambda: D.LogitPairing(attack=3), T, r"attack"),
    ("Distillation temperature 0", lambda: D.Distillation(_m(), temperature=0.0), V, r"temperature"),
    ("Distillation teacher not a module", lambda: D.Distillation("teacher", temperature=20.0), T, r"teacher"),
    ("Distillation hard_weight<0", lambda: D.Distillation(_m(), temperature=20.0, hard_weight=-1.0), V,
     r"hard_weight"),
    ("Parseval beta 0", lambda: D.Parseval(beta=0.0), V, r"beta"),
    ("Parseval fraction 0", lambda: D.Parseval(fraction=0.0), V, r"fraction"),
    ("train_denoiser guide unknown", lambda: D.train_denoiser(nn.Conv2d(1, 1, 1), _m(), tiny_batch(4), [lambda x, y: x],
                                                              guide="pixels"), V, r"guide"),
    ("train_denoiser epochs 0", lambda: D.train_denoiser(nn.Conv2d(1, 1, 1), _m(), tiny_batch(4),
                                                         [lambda x, y: x], epochs=0, progress=False), V, r"epochs"),
    # training.fit
    ("fit epochs 0", lambda: _fit(epochs=0), V, r"epochs"),
    ("fit epochs float", lambda: _fit(epochs=1.5), (V, T), r"epochs"),
    ("fit lr<0", lambda: _fit(lr=-0.1), V, r"\blr\b"),
    ("fit lr nan", lambda: _fit(lr=math.nan), V, r"\blr\b"),
    ("fit batch_size 0", lambda: _fit_batch(batch_size=0), V, r"batch_size"),
    ("fit optimizer unknown", lambda: _fit(optimizer="lbfgs"), V, r"optimizer"),
    ("fit schedule unknown", lambda: _fit(schedule="step"), V, r"schedule"),
    ("fit model not a module", lambda: __import__("robustkit.training", fromlist=["fit"]).fit(
        "model", tiny_batch(4), progress=False), T, r"model"),
    ("fit train_data not data", lambda: __import__("robustkit.training", fromlist=["fit"]).fit(
        tiny_cnn(), 42, progress=False), (T, V), r"train_data"),
    ("fit checkpoint_dir is a file", lambda: _fit_checkpoint_file(), V, r"checkpoint_dir"),
    ("fit checkpoint_dir under a file", lambda: _fit_checkpoint_file("sub"), V, r"checkpoint_dir"),
    ("fit checkpoint_dir an int", lambda: _fit(checkpoint_dir=3), T, r"checkpoint_dir"),
    ("fit train_data NaN", lambda: _fit_batch(train_data=_nan_batch()), V, r"train_data"),
    ("fit train_data 3-D", lambda: _fit_batch(train_data=(tiny_batch(8)[0][:, 0], tiny_batch(8)[1])), V,
     r"train_data"),
    ("fit eval_attack without eval_data", lambda: _fit_eval_attack(), V, r"eval_attack"),
]


class _IntLogits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).long()


class _StringData(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return "image", "label"


def _private_ce_backward(bad_target):
    z = torch.randn(1, 4, 10)
    y = torch.zeros(4, dtype=torch.long)
    _, stats = torch.ops.robustkit.ensemble_temperature_ce(z, y, 1.0, 1.0, 0.0)
    return torch.ops.robustkit._ensemble_temperature_ce_backward(torch.ones(4), z, torch.tensor([0, 0, 0, bad_target]),
                                                                stats, 1.0, 1.0, 0.0)


def _sign_aliased():
    x = torch.rand(3, 6)
    return ops.sign_momentum_step(x, x, torch.randn(3, 6), None, step_size=0.1, eps=0.03)


def _cw_aliased():
    m = torch.zeros(2, 5)
    return _cw(exp_avg=m, exp_avg_sq=m)


def _evaluate_attacks(attacks):
    from robustkit.eval import evaluate
    from tests._tiny import small_lenet
    import tempfile
    return evaluate(small_lenet(), _mnist4(), attacks, out=tempfile.mkdtemp(prefix="bad-eval-"), progress=False,
                    report=False, checks="off")


def _evaluate_model(model):
    from robustkit.eval import evaluate
    import tempfile
    model = model.eval()
    return evaluate(model, _mnist4(), {"fgsm": A.FGSM(tiny_cnn(), eps=0.1)}, out=tempfile.mkdtemp(prefix="bad-"),
                    progress=False, report=False, checks="off")


def _fit_checkpoint_file(below=None):
    """``fit`` with ``checkpoint_dir`` a regular file, or a folder ``below`` one."""
    import os
    import tempfile
    path = tempfile.mktemp(prefix="ckpt-file-")
    with open(path, "w") as f:
        f.write("not a folder")
    return _fit(checkpoint_dir=path if below is None else os.path.join(path, below))


def _nan_batch():
    x, y = tiny_batch(8)
    x[5, 0, 1, 1] = math.nan
    return x, y


def _fit_eval_attack():
    from robustkit.training import fit
    model = tiny_cnn()
    return fit(model, tiny_batch(8), eval_attack=PGD1(model), progress=False)


def _fit_batch(train_data=None, **kw):
    """``fit`` with the caller's batch_size (``_fit`` passes its own) and training data."""
    from robustkit.training import fit
    return fit(tiny_cnn(), tiny_batch(8) if train_data is None else train_data, progress=False, **kw)


# the CLI: each row gets a fresh temporary directory
CLI_CASES = [
    ("cli unknown attack", lambda t: _eval_cli(t, "--attack", "fgsmm"), r"--attack"),
    ("cli --eps -1", lambda t: _eval_cli(t, "--attack", "fgsm", "--eps", "-1"), r"--eps"),
    ("cli --eps nan", lambda t: _eval_cli(t, "--attack", "fgsm", "--eps", "nan"), r"--eps"),
    ("cli --eps text", lambda t: _eval_cli(t, "--attack", "fgsm", "--eps", "big"), r"--eps"),
    ("cli --steps 0", lambda t: _eval_cli(t, "--attack", "pgd", "--steps", "0"), r"--steps"),
    ("cli --steps -5", lambda t: _eval_cli(t, "--attack", "pgd", "--steps", "-5"), r"--steps"),
    ("cli --batch-size 0", lambda t: _eval_cli(t, "--attack", "fgsm", "--batch-size", "0"), r"--batch-size"),
    ("cli --limit 0", lambda t: _eval_cli(t, "--attack", "fgsm", "--limit", "0"), r"--limit"),
    ("cli --device bogus", lambda t: _eval_cli(t, "--attack", "fgsm", "--device", "bogus"), r"--device"),
    ("cli --device cuda:7", lambda t: _eval_cli(t, "--attack", "fgsm", "--device", "cuda:7"), r"--device"),
    ("cli --out is a file", lambda t: _eval_cli(t, "--attack", "fgsm", out=_file(t)), r"--out|out"),
    ("cli --out under a file", lambda t: _eval_cli(t, "--attack", "fgsm", out=_file(t) / "sub"), r"--out|out"),
    ("cli --weights missing", lambda t: _eval_cli(t, "--attack", "fgsm", "--weights", str(t / "none.pt")),
     r"--weights"),
    ("cli --weights not a state dict", lambda t: _eval_cli(t, "--attack", "fgsm", "--weights", str(_file(t))),
     r"--weights"),
    ("cli --model unknown", lambda t: _cli("eval", "--model", "nosuchpkg:Net", "--attack", "fgsm", "--out",
                                           str(t / "o")), r"--model|nosuchpkg"),
    ("cli --data unknown", lambda t: _eval_cli(t, "--attack", "fgsm", "--data", "svhn"), r"--data"),
    ("cli --target unknown", lambda t: _eval_cli(t, "--attack", "fgsm", "--target", "most_likely"), r"--target"),
    ("cli --workers -1", lambda t: _eval_cli(t, "--attack", "fgsm", "--workers", "-1"), r"--workers"),
    ("cli report of a missing dir", lambda t: _cli("report", str(t / "nothing")), r"nothing|DIR|results"),
    ("cli retrain --pca-dim 0", lambda t: _cli("retrain", "--data", "mnist", "--attack", "fgsm", "--pca-dim", "0",
                                               "--out", str(t / "r")), r"--pca-dim"),
]


def _file(tmp):
    path = tmp / "a-file"
    path.write_text("not a directory or weights")
    return path


def _rows():
    rows = []
    for case in CASES:
        name, call, error, pattern = case[:4]
        marks = case[4] if len(case) > 4 else ()
        rows.append(pytest.param(call, error, pattern, False, marks=marks, id=name))
    for name, call, pattern in CLI_CASES:
        rows.append(pytest.param(call, CliError, pattern, True, id=name))
    return rows


@pytest.mark.parametrize("call, error, pattern, takes_tmp", _rows())
def test_bad_input_is_refused_naming_the_argument(call, error, pattern, takes_tmp, tmp_path, one_thread):
    with pytest.raises(error) as info:
        call(tmp_path) if takes_tmp else call()
    message = str(info.value)
    assert message.strip(), f"empty message from {type(info.value).__name__}"
    assert "\n" not in message.strip(), f"the message is not one line: {message!r}"
    assert len(message) < 600, f"the message is not short: {message[:200]!r}..."
    import re
    assert re.search(pattern, message), f"{type(info.value).__name__}: {message!r} does not name {pattern!r}"


def test_the_table_is_big_enough():
    assert len(CASES) + len(CLI_CASES) >= 60
