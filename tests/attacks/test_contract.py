"""The attack contract (robustkit.attacks.base) across every attack: the two attack types, the shared options,
``__call__`` and ``run`` from one ``_attack``, generators and seeds, ensembles in both forms, eval mode while
attacking, compiled models, double backward through the routed forward, and the input errors that name their
argument (non-finite x, dtypes, labels of any integer width, out-of-range labels, torch.no_grad())."""
from __future__ import annotations

import warnings
from dataclasses import fields

import pytest
import torch
from torch import nn

from robustkit.attacks import (CW, DMIFGSM, FGSM, GAP, IFGSM, MIFGSM, PGD, Attack, AttackOptions, AttackResult,
                               DeepFool, FixedBudgetAttack, MinimalNormAttack)
from robustkit.nn import Ensemble
from tests.attacks._tiny import other_class, tiny_batch, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")

# every attack of this package, small budgets: (name, factory(model or models=..., **options))
FACTORIES = {
    "FGSM": lambda m, **o: FGSM(m, eps=0.1, **o),
    "IFGSM": lambda m, **o: IFGSM(m, eps=0.1, steps=3, **o),
    "PGD": lambda m, **o: PGD(m, eps=0.1, step_size=0.03, steps=3, **o),
    "PGD-l2": lambda m, **o: PGD(m, eps=1.0, step_size=0.3, steps=3, norm="l2", **o),
    "PGD-early": lambda m, **o: PGD(m, eps=0.1, step_size=0.03, steps=3, early_stop=True, **o),
    "MIFGSM": lambda m, **o: MIFGSM(m, eps=0.1, steps=3, **o),
    "DMIFGSM": lambda m, **o: DMIFGSM(m, eps=0.1, steps=3, **o),
    "DeepFool": lambda m, **o: DeepFool(m, steps=5, candidates=4, **o),
    "DeepFool-linf": lambda m, **o: DeepFool(m, steps=5, candidates=4, norm="linf", **o),
    "CW": lambda m, **o: CW(m, binary_search_steps=2, steps=5, lr=0.1, initial_const=1.0, **o),
    "CW-linf": lambda m, **o: CW(m, norm="linf", steps=4, lr=0.1, initial_const=1.0, **o),
    # (one round per pass: the pixel elimination runs a full L2 search per pass, about 50 passes here)
    "CW-l0": lambda m, **o: CW(m, norm="l0", binary_search_steps=1, steps=4, lr=0.1, initial_const=0.01, **o),
}
NAMES = list(FACTORIES)
# C&W L0 runs a full L2 search per pixel-elimination pass (about 50 passes on these models): 10-50 s a test on
# the shared machine, so its cases are slow; tests/attacks/test_cw.py checks it against the naive reference
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n == "CW-l0" else n for n in NAMES]
RANDOM = ("PGD", "PGD-l2", "PGD-early")  # the attacks that draw a random start


class BatchNormDropoutNet(nn.Module):
    """conv - batch norm - ReLU - dropout - linear - batch norm on 1x10x10 images."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(400, 10), nn.BatchNorm1d(10))
        with torch.no_grad():  # running statistics away from their initial values, so eval mode differs
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))))


def _fitted_gap(model, **kw):
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    loader = [(x[i:i + 32], torch.zeros(32, dtype=torch.int64)) for i in (0, 32)]
    return GAP(model, eps=0.1, width=4, blocks=1, seed=0, **kw).fit(loader, epochs=1, lr=1e-2, progress=False)


# ---- types and options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PARAMS)
def test_every_attack_is_one_of_the_two_types(name):
    atk = FACTORIES[name](tiny_cnn())
    assert isinstance(atk, Attack)
    assert isinstance(atk, FixedBudgetAttack) != isinstance(atk, MinimalNormAttack)
    assert atk.norm in type(atk).norms
    if isinstance(atk, FixedBudgetAttack):
        assert atk.eps in (0.1, 1.0)
    else:
        assert name.startswith(("DeepFool", "CW"))


def test_gap_is_a_fixed_budget_linf_attack_with_keyword_only_arguments():
    gap = GAP(tiny_cnn(), eps=0.2)
    assert isinstance(gap, FixedBudgetAttack) and gap.norm == "linf" and gap.eps == 0.2 and gap.seed is None
    with pytest.raises(TypeError):
        GAP(tiny_cnn(), 0.2)  # eps is keyword-only


def test_dmifgsm_takes_models_as_every_attack_does():
    a, b = tiny_cnn(seed=0), tiny_cnn(seed=1)
    x, y = tiny_batch()
    torch.testing.assert_close(DMIFGSM(models=[a, b], steps=3)(x, y), DMIFGSM(Ensemble([a, b]), steps=3)(x, y))
    assert len(DMIFGSM(a).models) == 1


def test_unknown_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="PGD: unexpected keyword argument 'sed'"):
        PGD(tiny_cnn(), sed=0)
    with pytest.raises(TypeError, match="DeepFool: unexpected keyword argument 'eps'"):
        DeepFool(tiny_cnn(), eps=0.1)


@pytest.mark.parametrize("options, exc, match", [
    (dict(attack_mode="training"), ValueError, "attack_mode must be 'eval' or 'train'"),
    (dict(amp="yes"), TypeError, "amp must be a bool"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(streams="on"), ValueError, "streams must be"),
    (dict(conv_input_grad="fast"), ValueError, "conv_input_grad must be"),
])
@pytest.mark.parametrize("name", ["PGD", "DeepFool", "CW"])
def test_shared_options_are_checked_once_for_every_attack(name, options, exc, match):
    with pytest.raises(exc, match=f"{name.split('-')[0]}: {match}"):
        FACTORIES[name](tiny_cnn(), **options)


def test_options_round_trip():
    atk = PGD(tiny_cnn(), batch_size=4, seed=3, attack_mode="train", conv_input_grad="torch")
    assert atk.options() == AttackOptions(batch_size=4, seed=3, attack_mode="train", conv_input_grad="torch")


@pytest.mark.parametrize("name", PARAMS)
def test_extras_never_reuse_a_field_name(name):
    x, y = tiny_batch(batch=4)
    res = FACTORIES[name](tiny_cnn(), seed=0).run(x, y)
    assert not set(res.extras) & {f.name for f in fields(AttackResult)}


# ---- __call__ and run -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PARAMS)
def test_call_returns_the_images_run_returns(name):
    m = tiny_cnn()
    x, y = tiny_batch(batch=5)
    atk_a, atk_b = FACTORIES[name](m, seed=4), FACTORIES[name](m, seed=4)
    images = atk_a(x, y)
    res = atk_b.run(x, y)
    assert torch.equal(images, res.adv) and not images.requires_grad
    torch.testing.assert_close(res.logits, m(res.adv), rtol=1e-5, atol=1e-5)


def test_call_and_run_chunked_equal_one_batch():
    m = tiny_cnn()
    x, y = tiny_batch(batch=7)
    early = lambda m, **o: IFGSM(m, eps=0.1, steps=3, early_stop=True, **o)  # noqa: E731
    for make in (early, FACTORIES["DeepFool"], FACTORIES["CW"]):
        whole = make(m).run(x, y)
        chunked = make(m, batch_size=3)
        torch.testing.assert_close(chunked(x, y), whole.adv, rtol=0, atol=1e-6)
        part = chunked.run(x, y)
        assert torch.equal(part.steps, whole.steps) and set(part.extras) == set(whole.extras)


# ---- seeds and generators -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RANDOM)
def test_seed_seeds_once_and_each_call_advances(name):
    m = tiny_cnn()
    x, y = tiny_batch(batch=6)
    atk = FACTORIES[name](m, seed=5)
    first, second = atk(x, y), atk(x, y)
    assert not torch.equal(first, second), "every batch of a training loop must get a new random start"
    again = FACTORIES[name](m, seed=5)
    assert torch.equal(again(x, y), first) and torch.equal(again(x, y), second)  # the same sequence
    atk.seed = 5  # re-seeding restarts the sequence
    assert torch.equal(atk(x, y), first)


@pytest.mark.parametrize("name", RANDOM)
def test_a_generator_passed_to_the_call_is_used_and_advanced(name):
    m = tiny_cnn()
    x, y = tiny_batch(batch=6)
    atk = FACTORIES[name](m, seed=5)
    g = torch.Generator().manual_seed(5)
    with_generator = atk.run(x, y, generator=g).adv
    assert torch.equal(with_generator, FACTORIES[name](m, seed=5)(x, y))  # same draws as seed=5's first call
    assert torch.equal(atk(x, y), with_generator), "the attack's own generator was not advanced by the call's"
    assert not torch.equal(atk.run(x, y, generator=g).adv, with_generator)  # g advanced
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        atk(x, y, generator=5)


def test_unseeded_attack_draws_from_the_global_generator():
    m = tiny_cnn()
    x, y = tiny_batch(batch=6)
    torch.manual_seed(9)
    a = PGD(m, steps=2)(x, y)
    torch.manual_seed(9)
    assert torch.equal(PGD(m, steps=2)(x, y), a)


def test_random_targets_follow_the_generator():
    m = tiny_cnn()
    x, y = tiny_batch(batch=16)
    atk = IFGSM(m, eps=0.1, steps=2)
    a = atk.run(x, y, target="random", generator=torch.Generator().manual_seed(1))
    b = atk.run(x, y, target="random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.target, b.target) and bool((a.target != y).all())


# ---- ensembles ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PARAMS)
def test_models_list_and_ensemble_module_are_one_code_path(name):
    members = [tiny_cnn(seed=s, dtype=torch.float64) for s in (0, 1, 2)]
    x, y = tiny_batch(batch=5, dtype=torch.float64)
    as_list = FACTORIES[name](None, models=members, seed=2).run(x, y)
    as_module = FACTORIES[name](Ensemble(members), seed=2).run(x, y)
    as_models = FACTORIES[name](None, models=Ensemble(members), seed=2).run(x, y)
    for other in (as_module, as_models):
        torch.testing.assert_close(other.adv, as_list.adv, rtol=0, atol=1e-12)
    mean = torch.stack([m(as_list.adv) for m in members]).mean(0)
    torch.testing.assert_close(as_list.logits, mean, rtol=1e-10, atol=1e-10)


def test_weighted_ensemble_decides_success_and_drives_logit_fusion():
    a, b = tiny_cnn(seed=0, dtype=torch.float64), tiny_cnn(seed=1, dtype=torch.float64)
    x, y = tiny_batch(batch=8, dtype=torch.float64)
    ens = Ensemble([a, b], weights=[3.0, 1.0])
    res = MIFGSM(ens, eps=0.1, steps=3, fusion="logits").run(x, y)
    same = MIFGSM(models=[a, b], eps=0.1, steps=3, fusion="logits", weights=[3.0, 1.0]).run(x, y)
    torch.testing.assert_close(res.adv, same.adv, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.logits, 0.75 * a(res.adv) + 0.25 * b(res.adv), rtol=1e-10, atol=1e-10)
    deepfool = DeepFool(ens, steps=3, candidates=3).run(x, y)
    torch.testing.assert_close(deepfool.logits, ens(deepfool.adv), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="a weighted Ensemble needs fusion='logits'"):
        MIFGSM(ens)
    with pytest.raises(ValueError, match="either to the Ensemble or to the attack"):
        MIFGSM(ens, fusion="logits", weights=[1.0, 1.0])


def test_ensemble_argument_errors():
    with pytest.raises(ValueError, match="exactly one of model"):
        PGD(tiny_cnn(), models=[tiny_cnn()])
    with pytest.raises(TypeError, match=r"models\[1\] must be an nn.Module"):
        PGD(models=[tiny_cnn(), "lenet"])
    with pytest.raises(TypeError, match=r"model must be an nn.Module, got list \(pass several models as"):
        PGD([tiny_cnn()])
    with pytest.raises(ValueError, match="models must not be empty"):
        PGD(models=[])


# ---- eval mode while attacking --------------------------------------------------------------------------
def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()})


@pytest.mark.parametrize("name", PARAMS + ["GAP"])
def test_attack_leaves_a_training_model_as_it_found_it(name):
    model = BatchNormDropoutNet()
    model.train()
    model.head[2].eval()  # a mix of modes must survive as it is (a frozen batch norm)
    model.conv.bias.requires_grad_(False)  # and a mix of requires_grad flags
    x, y = tiny_batch(batch=8)
    if name == "GAP":
        gap_model = nn.Sequential(nn.Upsample(size=(10, 10)), model)
        before = _state(model)
        atk = _fitted_gap(gap_model)
        x8 = x[:, :, :8, :8]
        atk(x8), atk.run(x8, y)
    else:
        before = _state(model)
        seen = []
        hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(mod.training))
                 for m in (model.bn, model.drop, model.head[2])]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no "training mode" warning
            atk = FACTORIES[name](model, seed=0)
            atk(x, y), atk.run(x, y, target=other_class(y) if name != "DeepFool-linf" else None)
        for h in hooks:
            h.remove()
        assert seen and not any(seen), "batch norm and dropout must run in eval mode during the attack"
    state, modes, flags = _state(model)
    for k, v in before[0].items():
        assert torch.equal(state[k], v), f"{k} changed"
    assert modes == before[1] and flags == before[2]
    assert all(p.grad is None for p in model.parameters()), "the attack wrote a parameter .grad"


def test_attack_on_a_training_model_equals_the_attack_on_its_eval_copy():
    model = BatchNormDropoutNet()
    x, y = tiny_batch(batch=8)
    reference = PGD(model.eval(), eps=0.1, step_size=0.03, steps=4, random_start=False).run(x, y)
    res = PGD(model.train(), eps=0.1, step_size=0.03, steps=4, random_start=False).run(x, y)
    assert torch.equal(res.adv, reference.adv) and torch.equal(res.logits, reference.logits)


def test_attack_mode_train_opts_out():
    model = BatchNormDropoutNet().train()
    running = model.bn.running_mean.clone()
    x, y = tiny_batch(batch=8)
    seen = []
    hook = model.drop.register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    PGD(model, steps=2, attack_mode="train")(x, y)
    hook.remove()
    assert all(seen) and model.training
    assert not torch.equal(model.bn.running_mean, running), "train mode updates the batch-norm statistics"


def test_exception_inside_the_attack_restores_the_modes():
    model = BatchNormDropoutNet().train()
    x, y = tiny_batch(batch=4)
    with pytest.raises(ValueError, match="y must hold classes < 10"):
        PGD(model, steps=1)(x, torch.full_like(y, 11))
    assert all(m.training for m in model.modules())


def test_data_parallel_model_does_not_warn_and_keeps_its_mode():
    inner = tiny_cnn()
    wrapped = nn.DataParallel(inner)  # the wrapper itself is in train mode while the model is in eval mode
    x, y = tiny_batch(batch=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adv = PGD(wrapped, steps=2, random_start=False)(x, y)
    assert torch.equal(adv, PGD(inner, steps=2, random_start=False)(x, y))
    assert wrapped.training and not inner.training


# ---- compiled models, double backward -------------------------------------------------------------------
def test_compiled_model_skips_routing_and_does_not_recompile():
    torch._dynamo = pytest.importorskip("torch._dynamo")
    m = tiny_cnn()
    x, y = tiny_batch(batch=6)
    compiled = torch.compile(m, backend="eager")
    atk = PGD(compiled, eps=0.1, step_size=0.03, steps=3, random_start=False)
    assert not atk._route_convolutions and PGD(m)._route_convolutions
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        a, b = atk(x, y), atk(x, y)  # a TorchFunctionMode around each forward recompiled every call
    eager = PGD(m, eps=0.1, step_size=0.03, steps=3, random_start=False)(x, y)
    torch.testing.assert_close(a, eager, rtol=0, atol=1e-6)
    assert torch.equal(a, b)
    # compiled submodules and model.compile() are detected too
    inner = tiny_cnn()
    inner.compile(backend="eager")
    assert not PGD(nn.Sequential(nn.Identity(), inner))._route_convolutions


@pytest.mark.slow
def test_inductor_compiled_model_equals_eager_within_float_tolerance():
    m = tiny_cnn()
    x, y = tiny_batch(batch=6)
    make = dict(eps=0.1, step_size=0.01, steps=5, random_start=False)
    eager = PGD(m, **make).run(x, y)
    compiled = PGD(torch.compile(m), **make).run(x, y)
    # sign steps: a gradient entry that changes sign under a different summation order moves a pixel by at
    # most 2 step sizes; count such pixels rather than bound them away
    diff = (compiled.adv - eager.adv).abs()
    assert diff.max() <= 2 * make["step_size"] + 1e-6 and (diff > 1e-5).float().mean() < 0.01
    torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-3, atol=1e-3)


def test_create_graph_through_the_routed_forward_reaches_the_weights():
    """Deep Defense trains through the input gradient of the attacked model: the routed forward the attacks
    use must give the same second-order parameter gradients as PyTorch's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(400, 10)).double()
    x, y = tiny_batch(batch=3, dtype=torch.float64)
    grads = {}
    for mode in ("robustkit", "torch"):
        atk = DeepFool(model, conv_input_grad=mode)
        model.zero_grad()
        x_var = x.clone().requires_grad_(True)
        margin = atk.logits(x_var).gather(1, y[:, None]).sum()
        (g,) = torch.autograd.grad(margin, x_var, create_graph=True)
        g.square().sum().backward()
        grads[mode] = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    assert DeepFool(model)._route_convolutions
    for a, b in zip(grads["robustkit"], grads["torch"]):
        assert (a is None) == (b is None)  # (the last bias does not reach the input gradient)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert grads["robustkit"][0].abs().sum() > 0


# ---- inputs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PARAMS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_x_is_an_error_naming_x(name, value):
    x, y = tiny_batch(batch=4)
    x[2, 0, 3, 3] = value
    atk = FACTORIES[name](tiny_cnn())
    for call in (atk, atk.run):
        with pytest.raises(ValueError, match=r"x must be finite, got NaN or inf in sample 2"):
            call(x, y)


def test_gap_non_finite_images_are_an_error():
    gap = _fitted_gap(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval())
    x = torch.rand(3, 1, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x\) must be finite|x must be finite"):
        gap(x)
    with pytest.raises(ValueError, match="x must be finite"):
        gap.run(x, torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("name", PARAMS)
def test_attacks_under_no_grad_or_inference_mode_enable_grad_inside(name):
    m = tiny_cnn()
    x, y = tiny_batch(batch=4)
    expected = FACTORIES[name](m, seed=1)(x, y)
    with torch.no_grad():
        got = FACTORIES[name](m, seed=1)(x, y)
        res = FACTORIES[name](m, seed=1).run(x, y)
        assert not torch.is_grad_enabled()  # the attack restored the caller's grad mode
    assert torch.equal(got, expected) and torch.equal(res.adv, expected)
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
        got = FACTORIES[name](m, seed=1)(x_inf, y_inf)
        assert torch.is_inference_mode_enabled()
    assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int8])
@pytest.mark.parametrize("name", ["PGD", "DeepFool", "CW", "CW-linf"])
def test_labels_of_any_integer_dtype_are_accepted(name, dtype):
    m = tiny_cnn()
    x, y = tiny_batch(batch=5)
    expected = FACTORIES[name](m, seed=0).run(x, y)
    got = FACTORIES[name](m, seed=0).run(x, y.to(dtype))
    assert torch.equal(got.adv, expected.adv) and torch.equal(got.success, expected.success)
    t = other_class(y)
    targeted = FACTORIES[name](m, seed=0).run(x, y.to(dtype), target=t.to(dtype))
    assert targeted.target.dtype == torch.int64 and torch.equal(targeted.target, t)


@pytest.mark.parametrize("bad", [torch.float32, torch.bool])
def test_non_integer_labels_are_refused(bad):
    x, y = tiny_batch(batch=4)
    with pytest.raises(ValueError, match="y must be an integer"):
        PGD(tiny_cnn())(x, (y % 2).to(bad))
    with pytest.raises(ValueError, match="target must be an integer"):
        PGD(tiny_cnn())(x, y, target=other_class(y).to(bad))


@pytest.mark.parametrize("x_dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["FGSM", "DeepFool", "CW"])
def test_x_in_another_dtype_than_the_model_names_x_and_both_dtypes(name, x_dtype):
    x, y = tiny_batch(batch=3)
    with pytest.raises(TypeError, match=rf"x is {str(x_dtype)[6:]} but the model's parameters are float32; "
                                        r"pass x.to\(torch.float32\)"):
        FACTORIES[name](tiny_cnn())(x.to(x_dtype), y)


@pytest.mark.parametrize("name", ["DeepFool", "DeepFool-linf", "CW", "CW-linf", "CW-l0"])
@pytest.mark.parametrize("bad, match", [(10, "y must hold classes < 10"), (-1, "y must hold classes >= 0")])
def test_minimal_norm_attacks_name_an_out_of_range_y(name, bad, match):
    x, y = tiny_batch(batch=4)
    y[1] = bad
    with pytest.raises(ValueError, match=f"{name.split('-')[0]}: {match}"):
        FACTORIES[name](tiny_cnn()).run(x, y)


@pytest.mark.parametrize("name", ["DeepFool", "CW", "CW-linf", "CW-l0"])
def test_minimal_norm_attacks_name_an_out_of_range_target(name):
    x, y = tiny_batch(batch=4)
    t = other_class(y)
    t[0] = 12
    with pytest.raises(ValueError, match=f"{name.split('-')[0]}: target must hold classes < 10"):
        FACTORIES[name](tiny_cnn()).run(x, y, target=t)


def test_model_returning_integer_logits_is_named():
    class Counts(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10].round().long()

    x, y = tiny_batch(batch=2)
    with pytest.raises(ValueError, match=r"models\[0\] must return floating-point logits, got int64"):
        PGD(Counts())(x, y)


# ---- GAP's call ---------------------------------------------------------------------------------------
def test_gap_call_validates_y_and_rejects_a_target_it_cannot_honour():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    gap = _fitted_gap(model)
    x = torch.rand(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.int64)
    assert torch.equal(gap(x), gap(x, y)) and torch.equal(gap(x, y.int()), gap.run(x, y).adv)
    with pytest.raises(ValueError, match="y must be an integer"):
        gap(x, y[:2])
    with pytest.raises(ValueError, match="GAP: target must be None: the generator is untargeted"):
        gap(x, y, target=torch.full_like(y, 3))
    with pytest.raises(ValueError, match="GAP: target must be None"):
        gap(x, target="least_likely")
    targeted = _fitted_gap(model, target=3)
    assert torch.equal(targeted.run(x, y).target, torch.full_like(y, 3))
    assert torch.equal(targeted(x, y, target=torch.full_like(y, 3)), targeted(x))
    with pytest.raises(ValueError, match="GAP: target must be None or 3"):
        targeted.run(x, y, target=torch.full_like(y, 4))
