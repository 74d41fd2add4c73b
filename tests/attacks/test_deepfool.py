"""DeepFool: equal to the naive per-sample, per-class implementation on small inputs; on the trained MNIST
LeNet: 100% success, targets reached, the box holds, rho2 is Deep Defense's term; errors."""
import pytest
import torch

from robustkit.attacks import DeepFool
from tests.attacks._tiny import tiny_cnn
from tests.reference.minnorm import deepfool_one


# One intra-op thread: on the shared 2-core machine thread hand-offs cost more than these small batches.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny():
    model = tiny_cnn(seed=3)
    x = torch.rand(4, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("targeted", [False, True])
def test_matches_naive_reference(tiny, norm, targeted):
    model, x, y = tiny
    with torch.no_grad():
        target = model(x).argsort(dim=1)[:, -3] if targeted else None  # third most likely class
    res = DeepFool(model, norm=norm, candidates=5, steps=20).run(x, y, target=target)
    for i in range(x.shape[0]):
        adv, iterations = deepfool_one(model, x[i], int(y[i]), steps=20, candidates=5, norm=norm,
                                       target=None if target is None else int(target[i]))
        torch.testing.assert_close(res.adv[i], adv, rtol=0, atol=1e-5)
        assert res.steps[i].item() == iterations
        assert res.success[i].item() == (iterations < 20)  # the naive loop stops only on success


def test_reforward_of_the_samples_still_moving_matches_the_reference(tiny):
    # Once the done samples outweigh a forward of the others, the iteration re-runs the forward on the
    # others only; the result still equals the naive per-sample loop.
    model, x, y = tiny
    atk = DeepFool(model, norm="linf", candidates=5, steps=20)
    forwards = []
    logits = atk.logits
    atk.logits = lambda x_a: (forwards.append(x_a.shape[0]), logits(x_a))[1]
    res = atk.run(x, y)
    iterations = int(res.steps.max()) + 1  # the last forward finds every sample done
    assert len(forwards) > iterations  # some iterations ran a second, smaller forward
    for i in range(x.shape[0]):
        adv, steps = deepfool_one(model, x[i], int(y[i]), steps=20, candidates=5, norm="linf")
        torch.testing.assert_close(res.adv[i], adv, rtol=0, atol=1e-5)
        assert res.steps[i].item() == steps


def test_mnist_lenet_untargeted(mnist_lenet):
    model, x, y = mnist_lenet
    x, y = x[:64], y[:64]
    params = [p.clone() for p in model.parameters()]
    res = DeepFool(model).run(x, y)
    assert res.success.all()
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert (res.l2 > 0).all() and res.l2.median() < 3.0  # a real minimal-norm attack, not a saturated image
    torch.testing.assert_close(res.extras["rho2"], (res.adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1))
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))
    assert (res.steps >= 1).all() and res.steps.max() < 50


def test_mnist_lenet_targeted_and_linf(mnist_lenet):
    model, x, y = mnist_lenet
    x, y = x[:24], y[:24]
    res = DeepFool(model).run(x, y, target="least_likely")
    assert (res.logits.argmax(dim=1) == res.target).all()
    linf = DeepFool(model, norm="linf").run(x, y)
    assert linf.success.all() and linf.adv.min() >= 0 and linf.adv.max() <= 1
    l2 = DeepFool(model).run(x, y)
    # each attack is best in its own norm, on the median
    assert linf.linf.median() < l2.linf.median() and l2.l2.median() < linf.l2.median()


def test_overshoot_scales_the_accumulated_step(tiny):
    model, x, y = tiny
    a = DeepFool(model, overshoot=0.0, steps=1).run(x, y)
    b = DeepFool(model, overshoot=0.5, steps=1).run(x, y)
    inside = ((x + 1.5 * (a.adv - x)) >= 0).all() & ((x + 1.5 * (a.adv - x)) <= 1).all()
    if inside:
        torch.testing.assert_close(b.adv - x, 1.5 * (a.adv - x), rtol=1e-4, atol=1e-6)
    assert (b.l2 >= a.l2 - 1e-6).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(norm="l1"), "norm must be one of"), (dict(steps=0), "steps must be an int >= 1"),
    (dict(candidates=1), "candidates must be an int >= 2"), (dict(overshoot=-0.1), "overshoot must be"),
    (dict(jacobian="vmap"), "jacobian must be one of"),
])
def test_bad_arguments(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepFool(tiny[0], **kwargs)


def test_empty_batch(tiny):
    model, x, y = tiny
    res = DeepFool(model).run(x[:0], y[:0])
    assert res.adv.shape == (0, 1, 10, 10) and res.extras["rho2"].shape == (0,)


@pytest.mark.parametrize("jacobian", ["loop", "batched"])
@pytest.mark.parametrize("targeted", [False, True])
def test_linearize_equals_the_float64_jacobian_of_the_kept_samples(targeted, jacobian):
    # The per-candidate backward over the shared graph against torch's Jacobian, sample by sample, with
    # some samples already done (they ride through the forward but get no row).
    model = tiny_cnn(seed=5, dtype=torch.float64)
    x = torch.rand(5, 1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 3, 7, 2, 9])
    atk = DeepFool(model, candidates=4, jacobian=jacobian)
    classes = None if targeted else atk._candidate_classes(model(x), y)
    target = torch.tensor([1, 1, 4, 5, 0]) if targeted else None
    keep = torch.tensor([0, 2, 3])
    x_a = x.clone().requires_grad_(True)
    f, w = atk._linearize(x_a, model(x_a), keep, y, target, classes)
    assert f.dtype == w.dtype == torch.float64 and w.shape == (3, 1 if targeted else 3, 100)
    for row, i in enumerate(keep.tolist()):
        def diffs(xi, i=i):
            z = model(xi.unsqueeze(0))[0]
            if targeted:
                t = int(target[i])
                return (z[t] - z.scatter(0, target[i:i + 1], float("-inf")).max()).unsqueeze(0)
            return z[classes[i]] - z[y[i]]
        torch.testing.assert_close(f[row], diffs(x[i]), rtol=0, atol=1e-12)
        jac = torch.autograd.functional.jacobian(diffs, x[i]).flatten(1)
        torch.testing.assert_close(w[row], jac, rtol=0, atol=1e-12)


def test_single_class_model_is_a_named_error(tiny):
    _, x, y = tiny
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 1)).eval()
    with pytest.raises(ValueError, match="at least 2 classes"):
        DeepFool(model).run(x, torch.zeros_like(y))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_batched_jacobian_gives_the_same_attack_as_the_loop(tiny, norm):
    model, x, y = tiny
    loop = DeepFool(model, norm=norm, jacobian="loop").run(x, y)
    batched = DeepFool(model, norm=norm, jacobian="batched").run(x, y)
    torch.testing.assert_close(batched.adv, loop.adv, rtol=0, atol=1e-6)
    assert torch.equal(batched.steps, loop.steps)
