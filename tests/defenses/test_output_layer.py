"""widen_output_layer: the copy's old logits equal the model's (float64, to 1e-12), the new rows follow nn.Linear's
init bound, the model is untouched, nested output layers are found, and bad models get clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.defenses import find_output_layer, widen_output_layer
from robustkit.models import LeNet


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).double()


def test_old_logits_identical_and_model_untouched():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(20, 1, 8, 8, dtype=torch.float64)
    wide = widen_output_layer(model, 2, probe=x[:1])
    out = wide(x)
    assert out.shape == (20, 5)
    # rows copied exactly: equal up to BLAS summation order (a wider matmul may block the sum differently)
    torch.testing.assert_close(out[:, :3], model(x), rtol=0, atol=1e-12)
    assert torch.equal(wide[3].weight[:3], model[3].weight) and torch.equal(wide[3].bias[:3], model[3].bias)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    new = wide[3]
    assert new.weight[3:].abs().max() <= 1 / 16 ** 0.5 and new.weight[3:].abs().max() > 0
    assert new.bias[3:].abs().max() <= 1 / 16 ** 0.5
    assert new.weight.requires_grad and new.weight.dtype == torch.float64
    # deterministic for a seed
    assert torch.equal(widen_output_layer(model, 2)[3].weight, new.weight)


def test_finds_the_nested_output_layer_of_lenet():
    torch.manual_seed(0)
    model = LeNet().eval()
    x = torch.rand(4, 1, 28, 28)
    name, layer = find_output_layer(model, num_classes=10)
    wide = widen_output_layer(model, 1, num_classes=10, probe=x)
    assert wide.get_submodule(name).out_features == 11
    torch.testing.assert_close(wide(x)[:, :10], model(x), rtol=0, atol=1e-5)  # float32, BLAS order


def test_clear_errors():
    with pytest.raises(ValueError, match="no nn.Linear"):
        widen_output_layer(nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten()), 1)
    with pytest.raises(ValueError, match="out_features == 7"):
        widen_output_layer(mlp(), 1, num_classes=7)
    with pytest.raises(ValueError, match="extra"):
        widen_output_layer(mlp(), 0)
    # the last registered nn.Linear is an auxiliary head, not the logits: the probe catches it
    with pytest.raises(ValueError, match="not the one producing the logits"):
        widen_output_layer(AuxHead(), 1, probe=torch.rand(2, 1, 8, 8))


class AuxHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.head, self.aux = nn.Linear(64, 3), nn.Linear(64, 3)

    def forward(self, x):
        return self.head(x.flatten(1))
