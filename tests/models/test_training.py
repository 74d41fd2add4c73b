"""The training loop, the cached trained-model helper, and the accuracy of the shared LeNet fixture."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from robustkit import models
from robustkit.datasets import mnist
from robustkit.training import evaluate_accuracy, train_classifier
from robustkit.zoo import trained_mnist_model


def test_mnist_lenet_fixture_reaches_98_percent_and_returns_correct_images(mnist_lenet):
    model, x, y = mnist_lenet
    assert not model.training
    assert isinstance(model, models.LeNet)
    assert evaluate_accuracy(model, mnist("test")) >= 0.98
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (256,) and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    with torch.no_grad():
        assert torch.equal(model(x).argmax(dim=1), y)


def test_mnist_test_batch_fixture_is_the_first_256_test_images(mnist_test_batch):
    x, y = mnist_test_batch
    images, labels = mnist("test").tensors
    assert torch.equal(x, images[:256]) and torch.equal(y, labels[:256])


def _tiny_problem() -> TensorDataset:
    # Two separable blobs in image shape, small enough to train in a fraction of a second.
    generator = torch.Generator().manual_seed(5)
    labels = torch.arange(200) % 2
    images = torch.rand(200, 1, 28, 28, generator=generator) * 0.5 + labels.view(-1, 1, 1, 1) * 0.5
    return TensorDataset(images, labels)


def test_training_is_deterministic_given_the_seed_and_leaves_global_rng_alone():
    data = _tiny_problem()
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = models.MLP(width=16)
        state_before = torch.get_rng_state()
        train_classifier(model, data, epochs=2, lr=1e-2, batch_size=32, seed=3, progress=False)
        assert torch.equal(torch.get_rng_state(), state_before)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_training_learns_and_sgd_and_cosine_work():
    data = _tiny_problem()
    torch.manual_seed(0)
    model = models.MLP(width=16, normalize=False)
    assert evaluate_accuracy(model, data) < 0.9
    train_classifier(model, data, epochs=3, lr=0.05, batch_size=20, seed=0, optimizer="sgd",
                     schedule="cosine", progress=False)
    assert not model.training
    assert evaluate_accuracy(model, data, batch_size=64) >= 0.95


def test_evaluate_accuracy_restores_training_mode():
    model = models.MLP(width=8).train()
    evaluate_accuracy(model, _tiny_problem())
    assert model.training


def test_bad_training_arguments_name_the_argument():
    data = _tiny_problem()
    for kwargs, name in [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"batch_size": 0}, "batch_size"),
                         ({"optimizer": "rmsprop"}, "optimizer"), ({"schedule": "step"}, "schedule")]:
        with pytest.raises(ValueError, match=name):
            train_classifier(models.MLP(width=8), data, progress=False, **kwargs)
    with pytest.raises(ValueError, match="name"):
        trained_mnist_model("resnet")


def test_trained_mnist_model_loads_from_cache_without_training(tmp_path, monkeypatch):
    import robustkit.zoo as train_module
    calls = []
    real = train_module.train_classifier

    def counting(model, dataset, **kwargs):
        calls.append(1)
        # A small subset keeps this test fast; the cache logic does not depend on the data size.
        return real(model, TensorDataset(*dataset[:512]), **kwargs)

    monkeypatch.setattr(train_module, "train_classifier", counting)
    first = trained_mnist_model("mlp", width=32, seed=1, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("*.pt"))
    assert len(calls) == 1 and len(files) == 1 and "mlp" in files[0].name and "w32" in files[0].name
    second = trained_mnist_model("mlp", width=32, seed=1, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1 and not second.training
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    trained_mnist_model("mlp", width=32, seed=2, cache_dir=tmp_path, progress=False)   # another key
    assert len(calls) == 2 and len(list(tmp_path.glob("*.pt"))) == 2
    files[0].write_bytes(b"truncated")                                                 # unreadable: retrain
    trained_mnist_model("mlp", width=32, seed=1, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3
