"""The ``streams`` option of the attacks: the K member forwards of an ensemble on separate CUDA streams.

On CPU (and for one model) it must be a no-op; on CUDA the results must equal the single-stream run, the
members must really run on side streams, and the join must be correct when the caller itself is on a
non-default stream. The CUDA tests carry the ``cuda`` marker (skipped without a GPU)."""
import pytest
import torch

from robustkit.attacks import MIFGSM, PGD
from tests.attacks._tiny import other_class, tiny_batch, tiny_cnn


def ensemble(k: int = 3, dtype=torch.float32, device="cpu"):
    return [tiny_cnn(seed=s, dtype=dtype).to(device) for s in range(k)]


@pytest.mark.parametrize("bad", ["yes", 1, None, "on"])
def test_streams_argument_is_checked(bad):
    with pytest.raises(ValueError, match="streams"):
        PGD(tiny_cnn(), streams=bad)


@pytest.mark.parametrize("early_stop", [False, True])
def test_streams_are_a_no_op_on_cpu(one_thread, early_stop):
    models = ensemble()
    x, y = tiny_batch(batch=8)
    runs = {s: MIFGSM(models=models, eps=0.2, steps=4, early_stop=early_stop, streams=s) for s in (True, False, "auto")}
    results = {s: atk.run(x, y, target=other_class(y)) for s, atk in runs.items()}
    for s in (True, "auto"):
        assert torch.equal(results[s].adv, results[False].adv)
        assert torch.equal(results[s].success, results[False].success)
        assert not runs[s]._use_streams(x) and runs[s]._side_streams == {}  # no CUDA stream was ever made


def _member_streams(atk, x, y):
    """The CUDA stream each member's forward ran on, for one step of ``atk``."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(torch.cuda.current_stream()))
             for m in atk.models]
    try:
        atk.run(x, y)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.cuda
def test_cuda_members_run_on_their_own_side_streams():
    models = ensemble(k=4, device="cuda")
    x, y = (t.cuda() for t in tiny_batch(batch=16))
    on = _member_streams(PGD(models=models, eps=0.1, steps=1, random_start=False, streams=True), x, y)
    current = torch.cuda.current_stream()
    first_step = on[:4]
    assert len(set(first_step)) == 4 and current not in first_step
    off = _member_streams(PGD(models=models, eps=0.1, steps=1, random_start=False, streams=False), x, y)
    assert set(off) == {current}
    single = _member_streams(PGD(models[0], eps=0.1, steps=1, random_start=False, streams=True), x, y)
    assert set(single) == {current}  # one model: nothing to overlap


@pytest.mark.cuda
@pytest.mark.parametrize("make", [
    lambda ms, s: MIFGSM(models=ms, eps=0.1, steps=6, streams=s),
    lambda ms, s: MIFGSM(models=ms, eps=0.1, steps=6, temperature=16.0, hard_weight=1.0, streams=s),
    lambda ms, s: PGD(models=ms, eps=0.1, step_size=0.02, steps=6, fusion="logits", random_start=False, streams=s),
    lambda ms, s: PGD(models=ms, eps=1.0, step_size=0.3, steps=6, norm="l2", random_start=False, early_stop=True,
                      streams=s),
])
def test_cuda_streams_equal_one_stream(make):
    # float64 and a batch large enough that the side streams' kernels really overlap the joins
    models = ensemble(k=4, dtype=torch.float64, device="cuda")
    x, y = (t.cuda() for t in tiny_batch(batch=2048, dtype=torch.float64))
    t = other_class(y)
    off = make(models, False).run(x, y, target=t)
    on = make(models, True).run(x, y, target=t)
    torch.testing.assert_close(on.adv, off.adv, atol=1e-12, rtol=0)
    assert torch.equal(on.success, off.success) and torch.equal(on.steps, off.steps)


@pytest.mark.cuda
def test_cuda_streams_fork_from_and_join_into_a_non_default_caller_stream():
    models = ensemble(k=3, device="cuda")
    x, y = (t.cuda() for t in tiny_batch(batch=1024))
    expected = MIFGSM(models=models, eps=0.1, steps=5, streams=False)(x, y)
    caller = torch.cuda.Stream()
    caller.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(caller):
        x2 = x * 1.0  # made on the caller's stream: the side streams must wait for it
        got = MIFGSM(models=models, eps=0.1, steps=5, streams=True)(x2, y)
    torch.cuda.current_stream().wait_stream(caller)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.cuda
def test_cuda_streams_under_amp():
    models = ensemble(k=3, device="cuda")
    x, y = (t.cuda() for t in tiny_batch(batch=512))
    off = MIFGSM(models=models, eps=0.1, steps=4, amp=True, streams=False).run(x, y)
    on = MIFGSM(models=models, eps=0.1, steps=4, amp=True, streams=True).run(x, y)
    assert on.adv.dtype == torch.float32
    torch.testing.assert_close(on.adv, off.adv, atol=1e-6, rtol=0)
