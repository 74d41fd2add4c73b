"""Adversarial-training objectives against naive float64 implementations from their papers, the mode and
gradient guarantees of example generation, and the argument errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import robustkit as rk
from robustkit.defenses import (TRADES, AdversarialTraining, FastAdversarialTraining, FreeAdversarialTraining,
                                adversarial_dataset)
from tests.reference import training as ref


def small_net(dtype=torch.float64, batchnorm: bool = True, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * 8 * 8, 5)]
    return nn.Sequential(*layers).to(dtype)


def batch(n: int = 6, dtype=torch.float64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 5, (n,), generator=g)


def grads_of(model: nn.Module, loss: torch.Tensor) -> list:
    return torch.autograd.grad(loss, [p for p in model.parameters()])


def copy_of(model: nn.Module) -> nn.Module:
    clone = small_net(batchnorm=any(isinstance(m, nn.BatchNorm2d) for m in model.modules()))
    clone.load_state_dict(model.state_dict())
    return clone


def assert_same_loss_and_grads(model, reference_model, loss, reference_loss):
    torch.testing.assert_close(loss, reference_loss, rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(grads_of(model, loss), grads_of(reference_model, reference_loss)):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_madry_and_goodfellow_objectives_equal_the_papers(one_thread, alpha):
    model, x, y = small_net(), *batch()
    reference_model = copy_of(model)
    model.train()
    attack = rk.attacks.PGD(model, eps=0.1, step_size=0.03, steps=3, random_start=False)
    out = AdversarialTraining(attack, clean_weight=alpha)(model, x, y)
    reference_model.eval()   # the example is generated in eval mode, the loss in train mode
    x_adv = ref.pgd_linf(reference_model, x, y, 0.1, 0.03, 3, torch.zeros_like(x))
    reference_model.train()
    expected = ref.mixed_objective(reference_model, x, x_adv, y, alpha)
    assert_same_loss_and_grads(model, reference_model, out.loss, expected)
    assert set(out.metrics) == ({"adv_loss"} if alpha == 0 else {"clean_loss"} if alpha == 1 else
                                {"adv_loss", "clean_loss"})


def test_goodfellow_with_fgsm(one_thread):
    model, x, y = small_net(), *batch()
    reference_model = copy_of(model)
    model.train()
    out = AdversarialTraining(rk.attacks.FGSM(model, eps=0.2), clean_weight=0.5)(model, x, y)
    reference_model.eval()
    x_adv = ref.fgsm(reference_model, x, y, 0.2)
    reference_model.train()
    expected = ref.mixed_objective(reference_model, x, x_adv, y, 0.5)
    assert_same_loss_and_grads(model, reference_model, out.loss, expected)
    # the logits returned are those of the adversarial images (train mode, as the loss saw them)
    torch.testing.assert_close(out.logits, reference_model(x_adv))


@pytest.mark.parametrize("start_in_box", [False, True])
def test_fast_adversarial_training_equals_wong_et_al(one_thread, start_in_box):
    model, x, y = small_net(), *batch()
    x[:, :, :3] = 0.0                                     # a black border, as MNIST's, where clipping matters
    reference_model = copy_of(model)
    model.train()
    torch.manual_seed(5)
    out = FastAdversarialTraining(eps=0.1, start_in_box=start_in_box)(model, x, y)   # step 1.25 * eps by default
    torch.manual_seed(5)
    start = torch.empty(x.shape, dtype=x.dtype).uniform_(-0.1, 0.1)    # the draw the random start makes
    if start_in_box:                                      # their CIFAR-10 code: the start clipped to the box
        start = (x + start).clamp(0, 1) - x
    reference_model.eval()
    x_adv = ref.fast_fgsm_example(reference_model, x, y, 0.1, 0.125, start)
    reference_model.train()
    assert_same_loss_and_grads(model, reference_model, out.loss, ref.cross_entropy(reference_model(x_adv), y))


def test_trades_equals_zhang_et_al(one_thread):
    model, x, y = small_net(), *batch()
    reference_model = copy_of(model)
    model.train()
    torch.manual_seed(7)
    out = TRADES(attack_steps=3, beta=6.0, eps=0.1, step_size=0.03, start_std=0.01)(model, x, y)
    torch.manual_seed(7)
    gaussian = torch.randn(x.shape, dtype=x.dtype)
    reference_model.eval()
    x_adv = ref.trades_example(reference_model, x, 0.1, 0.03, 3, gaussian, 0.01)
    reference_model.train()
    expected = ref.trades_objective(reference_model, x, x_adv, y, 6.0)
    assert_same_loss_and_grads(model, reference_model, out.loss, expected)
    assert out.metrics["robust_kl"] >= 0


def test_free_training_equals_shafahi_et_al(one_thread):
    model = small_net(batchnorm=False)
    reference_model = copy_of(model)
    batches = [batch(6, seed=s) for s in range(3)] + [batch(4, seed=9)]   # a short last batch
    objective = FreeAdversarialTraining(eps=0.1, replays=3, step_size=0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = 0
    for x, y in batches:
        for out in objective.passes(model, x, y):
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            steps += 1
    assert steps == 3 * len(batches)
    expected_delta = ref.free_training(reference_model, batches, eps=0.1, step_size=0.05, replays=3, lr=0.1)
    for ours, theirs in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(objective.state_dict()["delta"], expected_delta)


def test_free_training_needs_a_backward_between_calls(one_thread):
    model, x, y = small_net(batchnorm=False), *batch()
    objective = FreeAdversarialTraining(eps=0.1, replays=2)
    objective(model, x, y)
    with pytest.raises(RuntimeError, match="backward"):
        objective(model, x, y)


# ---- what example generation may and may not touch --------------------------------------------------------------
class Spy:
    """Forward hook on the model: at every forward, the modes of all modules, whether any parameter has a
    .grad yet, and the BatchNorm statistics."""

    def __init__(self, model: nn.Module):
        self.model, self.calls = model, []
        model.register_forward_pre_hook(self)

    def __call__(self, module, inputs):
        bn = next(m for m in self.model.modules() if isinstance(m, nn.BatchNorm2d))
        self.calls.append({"modes": [m.training for m in self.model.modules()],
                           "grads": [p.grad is not None for p in self.model.parameters()],
                           "stats": (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))})


def objectives_for(model):
    return {"madry": AdversarialTraining(rk.attacks.PGD(model, eps=0.1, step_size=0.03, steps=3)),
            "goodfellow": AdversarialTraining(rk.attacks.FGSM(model, eps=0.1), clean_weight=0.5),
            "fast": FastAdversarialTraining(eps=0.1), "trades": TRADES(attack_steps=3, eps=0.1, step_size=0.03)}


@pytest.mark.parametrize("name", ["madry", "goodfellow", "fast", "trades"])
def test_generation_runs_in_eval_mode_and_leaves_bn_grads_and_modes_alone(one_thread, name):
    model = small_net(dtype=torch.float32, dropout=0.5)
    x, y = batch(dtype=torch.float32)
    objective = objectives_for(model)[name]
    model.train()
    model[-2].eval()                          # a mixed-mode model: the dropout layer already in eval
    modes_before = [m.training for m in model.modules()]
    flags_before = [p.requires_grad for p in model.parameters()]
    spy = Spy(model)
    initial_stats = spy.model[2].running_mean.clone()
    out = objective(model, x, y)
    generation = [c for c in spy.calls if not any(c["modes"])]
    training = [c for c in spy.calls if c["modes"] == modes_before]
    assert generation and training and len(generation) + len(training) == len(spy.calls)
    # every generation forward comes before the training forwards and sees the untouched statistics
    assert spy.calls[:len(generation)] == generation
    for call in generation:
        torch.testing.assert_close(call["stats"][0], initial_stats, rtol=0, atol=0)
        assert call["stats"][2] == 0
    for call in spy.calls:                    # nothing wrote a parameter's .grad before the caller's backward
        assert not any(call["grads"])
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == modes_before
    assert [p.requires_grad for p in model.parameters()] == flags_before
    # only the training forwards moved the statistics: one update each
    assert int(model[2].num_batches_tracked) == len(training)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_attack_mode_train_attacks_the_model_as_it_is(one_thread):
    model = small_net(dtype=torch.float32)
    x, y = batch(dtype=torch.float32)
    model.train()
    spy = Spy(model)
    TRADES(attack_steps=2, eps=0.1, step_size=0.03, attack_mode="train")(model, x, y)
    assert all(all(c["modes"]) for c in spy.calls)


# ---- argument errors ------------------------------------------------------------------------------------------------
def test_attack_bound_to_another_model_is_refused(one_thread):
    model, other = small_net(dtype=torch.float32), small_net(dtype=torch.float32, seed=3)
    x, y = batch(dtype=torch.float32)
    objective = AdversarialTraining(rk.attacks.PGD(other, eps=0.1, steps=2))
    with pytest.raises(ValueError, match="attack is bound to another model"):
        objective(model, x, y)
    with pytest.raises(ValueError, match="attack is bound to another model"):
        rk.training.fit(model, (x, y), objective, epochs=1, batch_size=3, progress=False)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5", True])
def test_clean_weight_outside_unit_interval(value):
    attack = rk.attacks.FGSM(small_net(dtype=torch.float32), eps=0.1)
    with pytest.raises(ValueError, match=r"^AdversarialTraining: clean_weight must be a number in \[0, 1\]"):
        AdversarialTraining(attack, clean_weight=value)


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_replays_below_one(value):
    with pytest.raises(ValueError, match="^FreeAdversarialTraining: replays must be an int >= 1"):
        FreeAdversarialTraining(eps=0.1, replays=value)


@pytest.mark.parametrize("make, match", [
    (lambda: FastAdversarialTraining(eps=-0.1), "FastAdversarialTraining: eps"),
    (lambda: FastAdversarialTraining(eps=0.1, attack_mode="test"), "FastAdversarialTraining: attack_mode"),
    (lambda: TRADES(attack_steps=0), "TRADES: attack_steps"),
    (lambda: TRADES(beta=-1.0), "TRADES: beta"),
    (lambda: AdversarialTraining(lambda x, y: x), "AdversarialTraining: attack must be a robustkit attack"),
])
def test_other_bad_arguments_name_themselves(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


# ---- the budget scale that fit's eps_warmup drives --------------------------------------------------------------
BUDGETED = {   # objective at (eps, step), built fresh for the model
    "madry": lambda model, eps, step: AdversarialTraining(rk.attacks.PGD(model, eps=eps, step_size=step, steps=3)),
    "goodfellow": lambda model, eps, step: AdversarialTraining(rk.attacks.FGSM(model, eps=eps), clean_weight=0.5),
    "fast": lambda model, eps, step: FastAdversarialTraining(eps=eps, step_size=step),
    "trades": lambda model, eps, step: TRADES(attack_steps=3, eps=eps, step_size=step),
}


@pytest.mark.parametrize("name", sorted(BUDGETED))
def test_budget_scale_equals_the_objective_built_with_the_scaled_budget(one_thread, name):
    model, x, y = small_net(batchnorm=False), *batch()   # no running statistics for the first call to move
    scaled = BUDGETED[name](model, 0.2, 0.05)
    scaled.budget_scale = 0.25
    torch.manual_seed(3)
    out = scaled(model, x, y)
    torch.manual_seed(3)
    # FGSM's step is its eps: built at eps 0.05 it takes the step 0.05 = 0.25 * 0.2, as the scaled one does
    expected = BUDGETED[name](model, 0.05, 0.0125)(model, x, y)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-12, atol=1e-14)
    for ours, theirs in zip(grads_of(model, out.loss), grads_of(model, expected.loss)):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    if name in ("madry", "goodfellow"):   # the attack's own budget is restored after each call
        assert (scaled.attack.eps, scaled.attack.step_size) == (0.2, 0.05 if name == "madry" else 0.2)
    assert scaled.eps == 0.2              # the overfitting guard's radius stays the full budget


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, float("nan"), True])
def test_budget_scale_outside_zero_one_is_refused(value):
    objective = FastAdversarialTraining(eps=0.1)
    with pytest.raises(ValueError, match=r"^FastAdversarialTraining: budget_scale must be a number in \[0, 1\]"):
        objective.budget_scale = value


def test_budget_scale_of_an_attack_without_a_fixed_budget_is_refused():
    objective = AdversarialTraining(rk.attacks.DeepFool(small_net(dtype=torch.float32)))
    with pytest.raises(TypeError, match="AdversarialTraining: the budget of DeepFool cannot be scaled"):
        objective.budget_scale = 0.5


def test_images_outside_unit_interval_are_refused(one_thread):
    model = small_net(dtype=torch.float32)
    x, y = batch(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"^fit: train_data must hold pixel values in \[0, 1\]"):
        rk.training.fit(model, (x * 255, y), epochs=1, batch_size=3, progress=False)
    with pytest.raises(ValueError, match=r"^fit: eval_data must hold pixel values in \[0, 1\]"):
        rk.training.fit(model, (x, y), epochs=1, batch_size=3, eval_data=(x - 0.5, y), progress=False)
    with pytest.raises(ValueError, match=r"adversarial_dataset: data must hold pixel values in \[0, 1\]"):
        adversarial_dataset(rk.attacks.FGSM(model, eps=0.1), (x * 2, y))


def test_adversarial_dataset_is_the_attack_over_the_data(one_thread):
    model = small_net(dtype=torch.float32)
    model.train()
    x, y = batch(10, dtype=torch.float32)
    attack = rk.attacks.FGSM(model, eps=0.1)
    data = adversarial_dataset(attack, (x, y), batch_size=4)
    assert model.training                     # the mode is restored
    model.eval()
    torch.testing.assert_close(data.tensors[0], attack(x, y))
    assert torch.equal(data.tensors[1], y)
    both = adversarial_dataset(attack, (x, y), batch_size=4, include_clean=True)
    assert torch.equal(both.tensors[0][:10], x) and torch.equal(both.tensors[1], torch.cat([y, y]))


@pytest.mark.slow   # 200 steps of fast adversarial training on real MNIST: 20-60 s on a shared CPU
def test_short_mnist_run_raises_pgd_accuracy_well_above_clean_training(one_thread, mnist_lenet):
    from robustkit.datasets import mnist
    clean_model, x, y = mnist_lenet                           # the zoo's clean-trained LeNet, 1 epoch
    torch.manual_seed(0)
    model = rk.models.LeNet()
    train = torch.utils.data.Subset(mnist("train"), range(20000))
    rk.training.fit(model, train, FastAdversarialTraining(eps=0.2), epochs=1, batch_size=100, optimizer="adam",
                    lr=3e-3, schedule="cyclic", progress=False)

    def pgd_accuracy(m):
        adv = rk.attacks.PGD(m, eps=0.2, step_size=0.05, steps=10, seed=0)(x, y)
        with torch.no_grad():
            return float((m(adv).argmax(1) == y).float().mean())

    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) > 0.9
    clean, robust = pgd_accuracy(clean_model), pgd_accuracy(model)
    assert robust > clean + 0.3, (clean, robust)
