"""Retrainer on a tiny setup: it runs end to end, returns the seed's columns with values that follow from
their definitions, and leaves the original model untouched."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustkit.attacks import FGSM
from robustkit.defenses import KNNLabeler, Retrainer
from robustkit.metrics import fooled_not_detected, fooling_ratio
from robustkit.training import train_classifier


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


def noise_attack(seed):
    """An "attacker" whose outputs are pure uniform noise: fooling images, far from every training image."""
    g = torch.Generator().manual_seed(seed)
    return lambda m: (lambda x, y: torch.rand(x.shape, generator=g))


def test_fooling_images_get_a_new_class_the_retrained_model_learns(setup):
    _, train, test = setup
    # per-pixel features (1x1 conv + ReLU) let a small model tell uniform noise from the blobs by how far its
    # pixels stray from the blobs' grey level; the MLP of `setup` cannot learn that from 200 noise images
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 8, 2))
    model = train_classifier(model, torch.utils.data.TensorDataset(*train), epochs=5, lr=1e-2, progress=False)
    labeler = KNNLabeler(pca_dim=16, fooling_threshold="auto", backend="torch")
    retrainer = Retrainer(model, noise_attack(7), labeler, n_adversarial=200, epochs=40, lr=1e-2)
    report = retrainer.run(train, test)
    # all 200 noise images are flagged (auto threshold 1.44, nearest noise image at 1.87) and become class 2
    assert report.n_fooling == 200 and report.fooling_classes == 1 and report.n_fooling_dropped == 0
    new = retrainer.retrained_model
    held_out_noise = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(11))
    assert new(held_out_noise).shape[1] == 3
    assert (new(held_out_noise).argmax(1) == 2).double().mean() > 0.9  # measured 0.957
    x_test, y_test = test
    assert report.accuracy_original > 0.9 and report.accuracy_original == pytest.approx(
        (new(x_test).argmax(1) == y_test).double().mean().item())
    # the re-attack (fresh noise) is mostly put in the fooling class: detected, not fooled
    assert report.detected_after > 0.85 and report.fooling_ratio_after < 0.1  # measured 0.94, 0.04
    assert report.detected_after + report.fooling_ratio_after <= 1


def test_fooled_not_detected_rule():
    clean = torch.tensor([0, 1, 1, 0, 2])
    adv = torch.tensor([1, 1, 3, 4, 2])  # 3, 4 are fooling classes of a 3-class model
    assert fooled_not_detected(clean, adv, 3) == pytest.approx(1 / 5)
    assert fooled_not_detected(clean, adv, 5) == pytest.approx(fooling_ratio(clean, adv))


def test_fooling_images_are_dropped_and_source_labels_skip_the_labeler(setup):
    model, train, test = setup
    labeler = KNNLabeler(pca_dim=16, fooling_threshold=0.0, backend="torch")  # everything is a fooling image
    report = Retrainer(model, lambda m: FGSM(m, eps=0.05), labeler, n_adversarial=50, epochs=1,
                       fooling="drop").run(train, test)
    assert report.n_fooling_dropped == 50 and report.n_fooling == 50 and report.fooling_classes == 0
    assert report.labeler_accuracy == 0.0 and report.detected_after == 0.0
    assert retrainer_width(model, labeler, train, test) == 3
    report = Retrainer(model, lambda m: FGSM(m, eps=0.05), None, n_adversarial=50, epochs=1,
                       labels="source").run(train, test)
    assert math.isnan(report.labeler_accuracy) and report.n_fooling_dropped == 0


def retrainer_width(model, labeler, train, test):
    """Output width after retraining with the default fooling="new_class" and a fitted labeler that flags all."""
    retrainer = Retrainer(model, lambda m: FGSM(m, eps=0.05), labeler, n_adversarial=10, epochs=1)
    retrainer.run(train, test)
    return retrainer.retrained_model(test[0][:1]).shape[1]


def test_bad_arguments(setup):
    model, train, test = setup
    with pytest.raises(ValueError, match="labeler"):
        Retrainer(model, lambda m: FGSM(m), None)
    with pytest.raises(ValueError, match="n_adversarial"):
        Retrainer(model, lambda m: FGSM(m), KNNLabeler(4), n_adversarial=0)
    with pytest.raises(ValueError, match="model_factory"):
        Retrainer(model, lambda m: FGSM(m), KNNLabeler(4), mode="retrain")
    with pytest.raises(ValueError, match="fooling"):
        Retrainer(model, lambda m: FGSM(m), KNNLabeler(4), fooling="ignore")
    with pytest.raises(ValueError, match="num_classes=5"):
        Retrainer(model, lambda m: FGSM(m), KNNLabeler(4).fit(*train, num_classes=5), n_adversarial=5).run(train, test)
    with pytest.raises(ValueError, match="exceeds"):
        Retrainer(model, lambda m: FGSM(m), KNNLabeler(4), n_adversarial=10**6).run(train, test)
