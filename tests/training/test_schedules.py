"""Learning-rate schedules: their values, and the LambdaLR that applies them per optimizer step."""
import math

import pytest
import torch

from robustkit.training import schedules


def test_values():
    assert schedules.constant(0.7) == 1.0
    assert schedules.cosine(0.0) == 1.0 and abs(schedules.cosine(1.0)) < 1e-12
    assert schedules.cosine(0.5) == pytest.approx(0.5)
    assert [schedules.piecewise(t) for t in (0.0, 0.49, 0.5, 0.74, 0.75, 1.0)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    # Wong et al.'s triangle: np.interp(t, [0, 0.4, 1], [0, 1, 0])
    for t in (0.0, 0.1, 0.4, 0.7, 1.0):
        expected = t / 0.4 if t <= 0.4 else (1 - t) / 0.6
        assert schedules.cyclic(t) == pytest.approx(expected)


def test_scheduler_steps_per_optimizer_step():
    parameter = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([parameter], lr=0.2)
    scheduler = schedules.make_scheduler(opt, "cyclic", total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    # the first step already uses t = 1/10 (a rate of 0 would waste it); the peak is at step 4
    assert rates[0] == pytest.approx(0.2 * 0.1 / 0.4)
    assert max(rates) == pytest.approx(0.2) and rates.index(max(rates)) == 3
    cos = schedules.make_scheduler(torch.optim.SGD([parameter], lr=1.0), "cosine", total_steps=4)
    assert cos.get_last_lr()[0] == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        schedules.resolve_schedule("linear")
    assert schedules.resolve_schedule(math.sqrt) is math.sqrt
