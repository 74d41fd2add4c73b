"""Output shapes, parameter counts and state-dict layout of the reference models."""
from __future__ import annotations

import inspect

import pytest
import torch

import robustkit
from robustkit import models


@pytest.mark.parametrize("name", sorted(models.MNIST_MODELS))
@pytest.mark.parametrize("batch", [1, 5])
def test_mnist_models_output_logits_of_shape_batch_by_10(name, batch):
    net = models.MNIST_MODELS[name]().eval()
    out = net(torch.rand(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(models.MNIST_MODELS))
def test_mnist_models_width_changes_parameter_count(name):
    cls = models.MNIST_MODELS[name]
    default_width = inspect.signature(cls).parameters["width"].default
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    wider = cls(width=2 * default_width)
    assert count(wider) > count(cls())
    assert wider(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_default_layers_are_lenet5():
    net = models.LeNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [6, 16]
    assert [lin.out_features for lin in linears] == [120, 84, 10]


def test_wong_mnist_cnn_is_their_mnist_net():
    # Wong et al.'s mnist_net: conv(1->16, 4, s2, p1), conv(16->32, 4, s2, p1), fc 1568->100, fc 100->10, with
    # the Sequential keys the benchmarks' cached weights were saved under
    net = models.wong_mnist_cnn()
    assert sum(p.numel() for p in net.parameters()) == (16 * 16 + 16) + (32 * 16 * 16 + 32) + (1568 * 100 + 100) + 1010
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias",
                                      "7.weight", "7.bias"]
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert models.wong_mnist_cnn(num_classes=4)(torch.rand(1, 1, 28, 28)).shape == (1, 4)


@pytest.mark.parametrize("cls", [models.LeNet, models.MLP])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "6"])
def test_bad_width_is_rejected_naming_the_argument(cls, bad):
    with pytest.raises(ValueError, match="width"):
        cls(width=bad)


def test_builtin_normalization_equals_explicit_normalize_and_is_not_in_state_dict():
    torch.manual_seed(0)
    inner = models.LeNet(normalize=False).eval()
    outer = models.LeNet(normalize=True).eval()
    outer.load_state_dict(inner.state_dict())  # strict: same keys, normalisation constants excluded
    assert not any("normalize" in key for key in outer.state_dict())
    x = torch.rand(4, 1, 28, 28)
    explicit = torch.nn.Sequential(robustkit.Normalize(models.MNIST_MEAN, models.MNIST_STD), inner)
    torch.testing.assert_close(outer(x), explicit(x))


def test_state_dict_round_trips_through_a_fresh_instance(tmp_path):
    torch.manual_seed(1)
    net = models.VGGSmall(width=8).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    fresh = models.VGGSmall(width=8).eval()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(fresh(x), net(x))


def test_resnet50_matches_torchvision_parameter_count_and_names():
    net = models.resnet50()
    assert sum(p.numel() for p in net.parameters()) == 25_557_032   # torchvision.models.resnet50()
    state = net.state_dict()
    # torchvision's resnet50 state dict: 161 parameters + 159 BN buffers, with these names and shapes.
    assert len(state) == 320
    expected_shapes = {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.num_batches_tracked": (),
        "layer2.0.conv2.weight": (128, 128, 3, 3), "layer3.5.bn3.weight": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1), "fc.weight": (1000, 2048), "fc.bias": (1000,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "layer2.0.conv2.weight" in state and net.layer2[0].conv2.stride == (2, 2)  # stride on the 3x3 (v1.5)


def test_resnet50_forward_gives_logits_and_takes_any_input_size():
    net = models.resnet50(num_classes=7).eval()
    with torch.no_grad():   # 160 px instead of 224 keeps the test cheap; the pooling is adaptive
        out = net(torch.rand(2, 3, 160, 160))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_resnet18_cifar_shape_and_parameter_count():
    net = models.ResNet18Cifar().eval()
    assert sum(p.numel() for p in net.parameters()) == 11_173_962   # the usual CIFAR ResNet-18
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    small = models.ResNet18Cifar(width=8).eval()
    assert small(torch.rand(2, 3, 32, 32)).shape == (2, 10)
