"""RandomResizePad, DUNet, GuidedDenoiser and ScoreEnsemble against naive references."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.defenses.denoiser import DUNet, GuidedDenoiser
from robustkit.defenses.random_resize_pad import RandomResizePad, resize_pad
from robustkit.defenses.score_ensemble import ScoreEnsemble
from tests.reference.input_defenses import resize_pad_loop, score_ensemble_seed


def test_resize_pad_equals_per_image_interpolate_and_pad(one_thread):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 11, 13, generator=g, dtype=torch.float64)
    layer = RandomResizePad(None, (17, 19), min_scale=0.6, max_scale=1.3, seed=3)
    h, w, top, left = layer.draw(5, 11, 13)
    ours = resize_pad(x, (17, 19), h, w, top, left, pad_value=0.25)
    ref = resize_pad_loop(x, (17, 19), h, w, top, left, pad_value=0.25)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 5e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("sizes", [((28, 28), (28, 28), 0.75, 1.0), ((11, 13), (17, 19), 0.6, 1.3)])
def test_resize_pad_value_and_input_gradient_equal_the_loop(dtype, tol, sizes, one_thread):
    # float32: F.interpolate computes its own coordinates in float32; the two differ by a few ulp
    (in_h, in_w), out_size, low, high = sizes
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 2, in_h, in_w, generator=g, dtype=dtype)
    h, w, top, left = RandomResizePad(None, out_size, min_scale=low, max_scale=high, seed=5).draw(12, in_h, in_w)
    weight = torch.rand(12, 2, *out_size, generator=g, dtype=dtype)
    grads = []
    for fn in (resize_pad, resize_pad_loop):
        x_var = x.clone().requires_grad_(True)
        out = fn(x_var, out_size, h, w, top, left, pad_value=0.5)
        grads.append((out, torch.autograd.grad((out * weight).sum(), x_var)[0]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=tol)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=tol * 10)


def test_resize_pad_double_backward(one_thread):
    x = torch.rand(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    h, w, top, left = RandomResizePad(None, (9, 10), min_scale=0.9, max_scale=1.3, seed=0).draw(2, 6, 7)
    for mode in ("bilinear", "nearest"):
        assert torch.autograd.gradgradcheck(lambda a: resize_pad(a, (9, 10), h, w, top, left, mode=mode,
                                                                 pad_value=0.2), (x,))


def test_nearest_mode_equals_interpolate(one_thread):
    x = torch.rand(3, 2, 9, 11)
    h, w = torch.tensor([5, 9, 13]), torch.tensor([7, 11, 14])
    top, left = torch.tensor([0, 2, 0]), torch.tensor([1, 0, 0])
    ours = resize_pad(x, (13, 15), h, w, top, left, mode="nearest")
    for i in range(3):
        ref = torch.nn.functional.interpolate(x[i:i + 1], size=(int(h[i]), int(w[i])), mode="nearest")
        t, l = int(top[i]), int(left[i])
        torch.testing.assert_close(ours[i:i + 1, :, t:t + int(h[i]), l:l + int(w[i])], ref, rtol=0, atol=0)


def test_identity_draw_returns_the_image(one_thread):
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    ones = torch.full((2,), 28, dtype=torch.long)
    zeros = torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(resize_pad(x, (28, 28), ones, ones, zeros, zeros), x, rtol=0, atol=1e-12)


def test_whole_image_inside_canvas_and_padding_exact(one_thread):
    layer = RandomResizePad(None, 40, min_scale=0.5, max_scale=1.4, pad_value=-1.0, seed=1)
    for _ in range(20):
        h, w, top, left = layer.draw(64, 28, 28)
        assert bool((top >= 0).all() and (left >= 0).all())
        assert bool((top + h <= 40).all() and (left + w <= 40).all())
    x = torch.rand(16, 1, 28, 28) + 0.5          # strictly positive image
    out = layer(x)
    assert out.shape == (16, 1, 40, 40)
    # the image's pixels are positive; the padding is exactly pad_value; nothing else appears
    assert bool(((out == -1.0) | (out > 0)).all())
    counts = (out > 0).flatten(1).sum(1)
    assert bool((counts >= 14 * 14).all())


def test_same_seed_same_output_and_fresh_draws_differ(one_thread):
    x = torch.rand(4, 3, 16, 16)
    a = RandomResizePad(None, 20, min_scale=0.8, max_scale=1.2, seed=7)
    b = RandomResizePad(None, 20, min_scale=0.8, max_scale=1.2, seed=7)
    first = a(x)
    torch.testing.assert_close(first, b(x), rtol=0, atol=0)
    assert not torch.equal(first, a(x))           # the generator advances: a new draw per call


def test_differentiable_wrt_input(one_thread):
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    layer = RandomResizePad(None, 9, min_scale=0.9, max_scale=1.4, seed=0)
    state = layer.generator.get_state()

    def f(inp):
        layer.generator.set_state(state)          # the same draw for every evaluation of gradcheck
        return layer(inp)

    assert torch.autograd.gradcheck(f, (x,))


def test_wraps_a_model_in_one_batched_call(one_thread):
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    layer = RandomResizePad(model, 28, min_scale=0.75, max_scale=1.0, seed=0)
    assert layer(torch.rand(8, 1, 28, 28)).shape == (8, 10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(out_size=20, min_scale=0.9, max_scale=1.2), "out_size"),
    (dict(out_size=40, min_scale=0.0, max_scale=1.2), "min_scale"),
    (dict(out_size=40, min_scale=1.2, max_scale=0.9), "min_scale"),
    (dict(out_size=40, min_scale=0.9, max_scale=float("inf")), "max_scale"),
    (dict(out_size=0), "out_size"),
    (dict(out_size=40, mode="cubic"), "mode"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer = RandomResizePad(None, **kwargs)
        layer(torch.rand(1, 1, 28, 28))


@pytest.mark.parametrize("size", [(28, 28), (27, 31), (32, 32), (9, 8)])
def test_dunet_output_shape_equals_input(size, one_thread):
    net = DUNet(channels=3, widths=(4, 8, 8, 8))
    x = torch.rand(2, 3, *size)
    assert net(x).shape == x.shape


def test_guided_denoiser_is_model_of_x_minus_noise(one_thread):
    torch.manual_seed(0)
    den, model = DUNet(1, (4, 8)), nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(3, 1, 8, 8)
    gd = GuidedDenoiser(den, model).eval()
    torch.testing.assert_close(gd(x), model(x - den.eval()(x)))


def test_guided_denoiser_rejects_a_shape_changing_denoiser():
    gd = GuidedDenoiser(nn.Conv2d(1, 1, 3), nn.Flatten())
    with pytest.raises(ValueError, match="denoiser"):
        gd(torch.rand(1, 1, 8, 8))


def test_score_ensemble_equals_the_seed_formula(one_thread):
    torch.manual_seed(0)
    members = [nn.Linear(5, 4).double() for _ in range(3)]
    x = torch.randn(6, 5, dtype=torch.float64) * 3
    ens = ScoreEnsemble(members)
    seed_scores = score_ensemble_seed([m(x) for m in members])
    torch.testing.assert_close(ens(x).exp() * 3, seed_scores, rtol=1e-12, atol=1e-12)
    assert torch.equal(ens(x).argmax(1), seed_scores.argmax(1))
    plain = ScoreEnsemble(members, combine="logit-mean")(x)
    torch.testing.assert_close(plain, sum(m(x) for m in members) / 3)


def test_score_ensemble_bad_input():
    with pytest.raises(ValueError, match="combine"):
        ScoreEnsemble([nn.Linear(2, 2)], combine="vote")
    with pytest.raises(ValueError, match="models"):
        ScoreEnsemble([])


@pytest.mark.parametrize("change, match", [
    (dict(h=torch.tensor([9, 20])), "h"),             # taller than the canvas
    (dict(top=torch.tensor([0, -1])), "top"),
    (dict(left=torch.tensor([0, 6])), "left"),        # 6 + 9 > 12
    (dict(w=torch.tensor([0, 9])), "w"),
    (dict(h=torch.tensor([9, 9, 9])), "h and top"),
])
def test_resize_pad_rejects_a_placement_outside_the_canvas(change, match):
    args = dict(h=torch.tensor([9, 9]), w=torch.tensor([9, 9]), top=torch.tensor([0, 3]), left=torch.tensor([3, 0]))
    args.update(change)
    with pytest.raises(ValueError, match=match):
        resize_pad(torch.rand(2, 1, 8, 8), (12, 12), args["h"], args["w"], args["top"], args["left"])
