"""Deep Defense on real MNIST: a few hundred fine-tuning steps of the seed's MLP raise rho_2 (Eq. 7, measured with
robustkit's DeepFool) above the reference model's, with accuracy within 0.5 points. Plain fine-tuning with the
same optimizer and steps is the control: the rise must come from the regulariser, not from training longer."""
from __future__ import annotations

import pytest
import torch

import robustkit as rk
from robustkit.models import DeepDefenseMLP

TRAIN_IMAGES = 60_000         # the reference: two epochs over all of MNIST's training split
FINETUNE_STEPS = 400          # one pass over the first 40,000 images, in batches of 100
TEST_IMAGES = 10_000


def _rho2(model, x, y) -> float:
    """Mean DeepFool ||r||_2 / ||x||_2 over the correctly classified images, as the seed's Eq. 7."""
    with torch.no_grad():
        right = model(x).argmax(1) == y
    result = rk.attacks.DeepFool(model, steps=50).run(x[right], y[right])
    return float(result.extras["rho2"][result.success].mean())


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _finetune(reference_state, data, objective):
    model = DeepDefenseMLP()
    model.load_state_dict(reference_state)
    data = (data[0][:FINETUNE_STEPS * 100], data[1][:FINETUNE_STEPS * 100])
    rk.training.fit(model, data, objective, epochs=1, batch_size=100, optimizer="sgd", lr=5e-4, momentum=0.9,
                    weight_decay=5e-4, seed=0, progress=False)
    return model.eval()


@pytest.mark.slow
def test_a_few_hundred_steps_raise_rho2_with_accuracy_within_half_a_point():
    torch.manual_seed(0)
    x_train, y_train = rk.datasets.mnist("train").tensors
    data = (x_train[:TRAIN_IMAGES].contiguous(), y_train[:TRAIN_IMAGES].contiguous())
    x_test, y_test = rk.datasets.mnist("test").tensors
    x_test, y_test = x_test[:TEST_IMAGES], y_test[:TEST_IMAGES]

    reference = DeepDefenseMLP()
    rk.training.fit(reference, data, None, epochs=2, batch_size=100, optimizer="sgd", lr=0.05, momentum=0.9,
                    weight_decay=5e-4, schedule="cosine", seed=0, progress=False)
    reference.eval()
    state = {k: v.clone() for k, v in reference.state_dict().items()}

    deep_defense = rk.defenses.DeepDefense(lam=15.0, c=25.0, d=5.0, steps=5, overshoot=0.02, candidates=10,
                                           jacobian="batched")
    defended = _finetune(state, data, deep_defense)
    control = _finetune(state, data, None)

    rho_ref, rho_dd, rho_control = (_rho2(m, x_test[:500], y_test[:500]) for m in (reference, defended, control))
    acc_ref, acc_dd = _accuracy(reference, x_test, y_test), _accuracy(defended, x_test, y_test)
    print(f"rho2 reference {rho_ref:.4f}, plain fine-tuning {rho_control:.4f}, Deep Defense {rho_dd:.4f}; "
          f"accuracy {acc_ref:.4f} -> {acc_dd:.4f}")
    assert rho_dd > 1.05 * rho_ref, (rho_ref, rho_dd)
    assert rho_dd > 1.05 * rho_control, (rho_control, rho_dd)
    assert abs(acc_dd - acc_ref) <= 0.005, (acc_ref, acc_dd)
