"""Retrainer on a tiny setup: it runs end to end, returns the seed's columns with values that follow from
their definitions, and leaves the original model untouched."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustkit.attacks import FGSM
from robustkit.defenses import KNNLabeler, Retrainer
from robustkit.eval.metrics import fooling_ratio
from robustkit.models.train import train_classifier


pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n, seed):
    """Two-class 1x8x8 images: class c is brighter by 0.1 in half c of the image, plus noise; FGSM at
    eps = 0.05 fools the model on about half of them while staying far closer to its source image than to
    any other training image (so the labeler recovers the source label)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    base = torch.zeros(2, 1, 8, 8)
    base[0, :, :4], base[1, :, 4:] = 0.1, 0.1
    x = (base[y] + 0.15 * torch.randn(n, 1, 8, 8, generator=g) + 0.4).clamp(0, 1)
    return x, y


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))


@pytest.fixture(scope="module")
def setup():
    train, test = blobs(400, 0), blobs(200, 1)
    model = train_classifier(small_model(), torch.utils.data.TensorDataset(*train), epochs=5, lr=1e-2,
                             progress=False)
    return model, train, test


@pytest.mark.parametrize("labels", ["labeler", "source"])
def test_runs_and_returns_the_seed_columns(setup, labels):
    model, train, test = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retrainer = Retrainer(model, lambda m: FGSM(m, eps=0.05), KNNLabeler(pca_dim=16, backend="torch"),
                          n_adversarial=200, epochs=5, lr=1e-2, labels=labels)
    report = retrainer.run(train, test)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    row = report.as_dict()
    for column in ("accuracy_original", "accuracy_adversarial", "fooling_ratio_before", "fooling_ratio_after",
                   "labeler_accuracy"):
        assert 0 <= row[column] <= 1
    x_test, y_test = test
    adv = FGSM(model, eps=0.05)(x_test, y_test)
    assert report.fooling_ratio_before == pytest.approx(fooling_ratio(model(x_test).argmax(1), model(adv).argmax(1)))
    assert report.fooling_ratio_before > 0.3
    new = retrainer.retrained_model
    assert report.accuracy_adversarial == pytest.approx((new(adv).argmax(1) == y_test).double().mean().item())
    assert report.fooling_ratio_after == pytest.approx(
        fooling_ratio(new(x_test).argmax(1), new(FGSM(new, eps=0.05)(x_test, y_test)).argmax(1)))
    assert report.n_fooling_dropped == 0
    if labels == "labeler":
        assert report.labeler_accuracy > 0.9


def test_fooling_images_are_dropped_and_source_labels_skip_the_labeler(setup):
    model, train, test = setup
    labeler = KNNLabeler(pca_dim=16, fooling_threshold=0.0, backend="torch")  # everything is a fooling image
    report = Retrainer(model, lambda m: FGSM(m, eps=0.05), labeler, n_adversarial=50, epochs=1).run(train, test)
    assert report.n_fooling_dropped == 50 and report.labeler_accuracy == 0.0
    report = Retrainer(model, lambda m: FGSM(m, eps=0.05), None, n_adversarial=50, epochs=1,
                       labels="source").run(train, test)
    assert math.isnan(report.labeler_accuracy) and report.n_fooling_dropped == 0


def test_bad_arguments(setup):
    model, train, test = setup
    with pytest.raises(ValueError, match="labeler"):
        Retrainer(model, lambda m: FGSM(m), None)
    with pytest.raises(ValueError, match="n_adversarial"):
        Retrainer(model, lambda m: FGSM(m), KNNLabeler(4), n_adversarial=0)
    with pytest.raises(ValueError, match="model_factory"):
        Retrainer(model, lambda m: FGSM(m), KNNLabeler(4), mode="retrain")
    with pytest.raises(ValueError, match="exceeds"):
        Retrainer(model, lambda m: FGSM(m), KNNLabeler(4), n_adversarial=10**6).run(train, test)
