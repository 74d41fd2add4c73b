"""check_model: every warning fires on a model built to trigger it and on none of the clean reference models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.eval.checks import CODES, EvaluationWarning, check_black_box, check_curve, check_model
from tests._tiny import small_lenet, tiny_batch, tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


class Softmaxed(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(dim=1)


class AlwaysDropout(nn.Module):
    """Dropout that stays on in eval mode (F.dropout with training=True): a randomized model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(nn.functional.dropout(x, 0.3, training=True))


class Rounded(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


class SqrtInput(nn.Module):
    """``model(sqrt(x))``: the input gradient is infinite at the zero pixels of MNIST."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.sqrt())


class Snap(nn.Module):
    """Snaps inputs far from a binary image (mean |x - round(x)| > tau) back to round(x), without a gradient:
    small perturbations reach the classifier, large ones are undone, so stronger gradient attacks do worse,
    and a black-box search that stays close to the data beats them."""

    def __init__(self, model, tau=0.11):
        super().__init__()
        self.model, self.tau = model, tau

    def forward(self, x):
        far = ((x - x.round()).abs().flatten(1).mean(dim=1) > self.tau).view(-1, 1)
        return torch.where(far, self.model(x.round()).detach(), self.model(x))


def _codes(found):
    return {w.code for w in found}


def test_static_checks_fire_on_their_trigger_models():
    model = tiny_cnn(seed=0)
    x, y = tiny_batch(batch=8, seed=1)
    assert _codes(check_model(model, x, y, emit=False)) == set()
    assert _codes(check_model(model.train(), x, y, emit=False)) == {"train_mode"}
    model.eval()
    assert "probabilities" in _codes(check_model(Softmaxed(model).eval(), x, y, emit=False))
    assert "nondeterministic" in _codes(check_model(AlwaysDropout(model).eval(), x, y, emit=False))
    assert "zero_gradient" in _codes(check_model(Rounded(model).eval(), x, y, emit=False))
    x0 = x.clone()
    x0[:, :, :3] = 0
    assert "nonfinite_gradient" in _codes(check_model(SqrtInput(model).eval(), x0, y, emit=False))


def test_findings_are_emitted_as_warnings_and_modes_restored():
    model = tiny_cnn(seed=0).train()
    x, y = tiny_batch(batch=4)
    with pytest.warns(EvaluationWarning, match="train_mode"):
        check_model(model, x, y)
    assert model.training


def test_curve_and_black_box_rules():
    assert check_curve({0.1: 0.5, 0.2: 0.3, 0.3: 0.1}, what="eps", count=100) is None
    assert check_curve({0.1: 0.3, 0.2: 0.5}, what="eps", count=100).code == "rises_with_eps"
    assert check_curve({0.1: 0.30, 0.2: 0.31}, what="eps", count=100) is None  # within noise
    assert check_curve({5: 0.2, 25: 0.6}, what="steps", count=100).code == "rises_with_steps"
    assert check_black_box(0.5, 0.2, count=100).code == "black_box_stronger"
    assert check_black_box(0.2, 0.21, count=100) is None


@pytest.mark.parametrize("kwargs,message", [({"eps": 0}, "eps must be None or a number > 0"),
                                            ({"norm": "l1"}, "norm must be 'linf' or 'l2'"),
                                            ({"max_samples": 0}, "max_samples must be an int >= 1")])
def test_bad_arguments_name_themselves(kwargs, message):
    x, y = tiny_batch(batch=2)
    with pytest.raises(ValueError, match=message):
        check_model(tiny_cnn(), x, y, **kwargs)


@pytest.mark.slow
def test_probes_fire_on_a_masking_model_and_not_on_clean_reference_models(mnist_lenet):
    model, x, y = mnist_lenet
    x, y = x[:48], y[:48]
    assert _codes(check_model(Snap(model).eval(), x, y, eps=0.3, emit=False)) == {
        "rises_with_eps", "rises_with_steps", "black_box_stronger"}
    for eps in (0.1, 0.3):
        assert _codes(check_model(model, x, y, eps=eps, emit=False)) == set(), eps
    assert _codes(check_model(small_lenet(), x, y, eps=0.1, emit=False)) == set()
    assert set(CODES) >= {"rises_with_eps", "rises_with_steps", "black_box_stronger"}


def test_evaluate_records_the_findings_in_results_json(tmp_path):
    from robustkit.attacks import FGSM
    from robustkit.eval import evaluate

    model = Softmaxed(tiny_cnn(seed=0)).train()
    x, y = tiny_batch(batch=8, seed=1)
    with pytest.warns(UserWarning, match="probabilities"):
        res = evaluate(model, (x, y), {"fgsm": FGSM(model, eps=0.05)}, out=tmp_path / "run", checks="static",
                       report=False, progress=False)
    assert {w["code"] for w in res["warnings"]} == {"train_mode", "probabilities"}
    clean = evaluate(tiny_cnn(seed=0), (x, y), {"fgsm": FGSM(tiny_cnn(seed=0), eps=0.05)}, out=tmp_path / "clean",
                     checks="static", report=False, progress=False)
    assert clean["warnings"] == []
    with pytest.raises(ValueError, match="checks must be one of"):
        evaluate(model, (x, y), {"fgsm": FGSM(model, eps=0.05)}, out=tmp_path / "bad", checks="all")
