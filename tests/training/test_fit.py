"""robustkit.training.fit: the loop against a plain loop, checkpoints and exact resume, constraints, multi-pass
objectives, the overfitting guard, amp, and its argument errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import robustkit as rk
from robustkit.training import ObjectiveOutput, fit

from ._common import assert_same_weights, tiny_data, tiny_model, weights


def quiet_fit(model, data, objective=None, **kwargs):
    kwargs.setdefault("progress", False)
    return fit(model, data, objective, **kwargs)


def test_clean_fit_equals_a_plain_loop(one_thread):
    x, y = tiny_data(40)
    model, reference = tiny_model(), tiny_model()
    history = quiet_fit(model, (x, y), epochs=2, batch_size=10, optimizer="sgd", lr=0.1, momentum=0.9,
                        weight_decay=1e-3, schedule="cosine", seed=3)
    # the documented order: epoch e shuffles with a generator seeded seed + e (DistributedSampler's rule)
    opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    total, step = 8, 0
    for epoch in range(2):
        order = torch.randperm(40, generator=torch.Generator().manual_seed(3 + epoch))
        for start in range(0, 40, 10):
            rows = order[start:start + 10]
            loss = F.cross_entropy(reference(x[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            for group in opt.param_groups:
                group["lr"] = 0.1 * 0.5 * (1 + math.cos(math.pi * step / total))
    assert_same_weights(weights(model), weights(reference), rtol=1e-6, atol=1e-7)
    assert len(history) == 2 and history[1]["epoch"] == 2
    assert not model.training


def test_schedules_and_optimizers_run(one_thread):
    x, y = tiny_data(20)
    for optimizer in ("sgd", "adam", "adamw"):
        for schedule in ("constant", "cosine", "piecewise", "cyclic", lambda t: 1 - t):
            history = quiet_fit(tiny_model(), (x, y), epochs=1, batch_size=10, optimizer=optimizer, lr=1e-2,
                                schedule=schedule)
            assert math.isfinite(history[0]["train_loss"])


class CrashAt:
    """A constraint that raises at its n-th call (simulates a killed run); constant repr, so a run with it and
    the resumed run without a crash have the same signature."""

    def __init__(self, at=None):
        self.at, self.calls = at, 0

    def __call__(self, model):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise KeyboardInterrupt("killed")

    def __repr__(self):
        return "CrashAt()"


def resumable_run(folder, constraint, resume=False):
    x, y = tiny_data(60)
    model = tiny_model(dropout=0.3)                       # dropout and random starts: RNG state matters
    return model, quiet_fit(model, (x, y), rk.defenses.FastAdversarialTraining(eps=0.1), epochs=3,
                            batch_size=20, optimizer="adam", lr=1e-2, schedule="cyclic", checkpoint_dir=folder,
                            resume=resume, eval_data=(x[:20], y[:20]),
                            eval_attack=None, constraints=[constraint], overfit_guard=False, seed=5)


def test_kill_and_resume_gives_the_uninterrupted_weights(one_thread, tmp_path):
    straight, straight_history = resumable_run(tmp_path / "a", CrashAt())
    with pytest.raises(KeyboardInterrupt):
        resumable_run(tmp_path / "b", CrashAt(at=5))      # killed in epoch 2 (3 steps per epoch)
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    resumed, resumed_history = resumable_run(tmp_path / "b", CrashAt(), resume=True)
    assert_same_weights(weights(straight), weights(resumed))
    timing = {"seconds", "images_per_second", "eval_seconds"}
    strip = lambda h: [{k: v for k, v in e.items() if k not in timing} for e in h.epochs]  # noqa: E731
    assert strip(straight_history) == strip(resumed_history)
    # resuming a finished run does nothing more
    again, _ = resumable_run(tmp_path / "b", CrashAt(), resume=True)
    assert_same_weights(weights(again), weights(straight))


def test_checkpoint_and_history_files(one_thread, tmp_path):
    x, y = tiny_data(20)
    model = tiny_model()
    history = quiet_fit(model, (x, y), epochs=2, batch_size=10, checkpoint_dir=tmp_path, eval_data=(x, y),
                        eval_attack=rk.attacks.FGSM(model, eps=0.1))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "history", "signature"} <= set(state)
    assert state["epoch"] == 2 and state["scheduler"]["last_epoch"] == 4
    assert_same_weights(state["model"], weights(model))
    written = json.loads((tmp_path / "history.json").read_text())
    assert written == json.loads(json.dumps(history.to_dict()))
    assert 0 <= history[-1]["robust_accuracy"] <= history[-1]["clean_accuracy"] <= 1


def test_another_runs_checkpoint_is_refused(one_thread, tmp_path):
    x, y = tiny_data(20)
    quiet_fit(tiny_model(), (x, y), epochs=1, batch_size=10, lr=0.1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError,
                       match=r"^fit: checkpoint_dir .* holds another run's checkpoint \(it differs in lr\)"):
        quiet_fit(tiny_model(), (x, y), epochs=1, batch_size=10, lr=0.2, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"differs in objective"):
        quiet_fit(tiny_model(), (x, y), rk.defenses.FastAdversarialTraining(0.1), epochs=1, batch_size=10, lr=0.1,
                  checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"already holds this run's checkpoint .* pass resume=True"):
        quiet_fit(tiny_model(), (x, y), epochs=1, batch_size=10, lr=0.1, checkpoint_dir=tmp_path)


def test_constraints_run_after_every_step_on_the_bare_model(one_thread):
    x, y = tiny_data(30)
    model = tiny_model()
    seen = []

    def clamp_weights(m):
        seen.append(m)
        for p in m.parameters():
            p.clamp_(-0.05, 0.05)            # in place on parameters: allowed, fit runs it under no_grad

    quiet_fit(model, (x, y), epochs=2, batch_size=10, lr=0.5, constraints=[clamp_weights])
    assert len(seen) == 6 and all(m is model for m in seen)
    assert all(float(p.detach().abs().max()) <= 0.05 + 1e-7 for p in model.parameters())


def test_free_training_drives_replays_optimizer_steps_per_batch(one_thread, tmp_path):
    x, y = tiny_data(30)
    model = tiny_model()
    objective = rk.defenses.FreeAdversarialTraining(eps=0.1, replays=3)
    calls = []
    quiet_fit(model, (x, y), objective, epochs=1, batch_size=10, constraints=[calls.append],
              checkpoint_dir=tmp_path)
    assert len(calls) == 9
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == 9
    torch.testing.assert_close(state["objective"]["delta"], objective.state_dict()["delta"])
    assert float(state["objective"]["delta"].abs().max()) <= 0.1 + 1e-7


class SabotageAfter:
    """Clean cross-entropy for ``good_calls`` calls, then the negated loss (drives accuracy to 0): a stand-in
    for catastrophic overfitting that the guard must catch."""

    guard_overfitting = True

    def __init__(self, good_calls: int, eps: float = 0.02):
        self.good_calls, self.eps, self.calls = good_calls, eps, 0

    def __call__(self, model, x, y):
        self.calls += 1
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return ObjectiveOutput(loss=loss if self.calls <= self.good_calls else -loss, logits=logits, metrics={})

    def __repr__(self):
        return f"SabotageAfter({self.good_calls})"


def test_overfitting_guard_stops_and_restores_the_last_good_epoch(one_thread, tmp_path):
    x, y = tiny_data(200)
    settings = dict(batch_size=20, optimizer="adam", lr=2e-2, eval_data=(x[:100], y[:100]), seed=0)
    good = tiny_model()
    quiet_fit(good, (x, y), SabotageAfter(30), epochs=3, **settings)       # 10 steps per epoch: 3 good epochs
    model = tiny_model()
    with pytest.warns(UserWarning, match="catastrophic overfitting after epoch 4"):
        history = quiet_fit(model, (x, y), SabotageAfter(30), epochs=6, checkpoint_dir=tmp_path, **settings)
    assert history.restored_epoch == 3 and len(history) == 4
    assert history[3]["guard_robust_accuracy"] < history[2]["guard_robust_accuracy"] - 0.2
    assert_same_weights(weights(model), weights(good))
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert_same_weights(saved["model"], weights(good))
    assert saved["history"]["stopped"].startswith("catastrophic overfitting")


def test_amp_trains_in_bfloat16_autocast(one_thread):
    x, y = tiny_data(20)
    model = tiny_model()
    dtypes = []
    model.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    history = quiet_fit(model, (x, y), rk.defenses.TRADES(attack_steps=2, eps=0.1, step_size=0.05), epochs=1,
                        batch_size=10, amp=True)
    assert torch.bfloat16 in dtypes and math.isfinite(history[0]["train_loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_progress_bar_runs(one_thread, capsys):
    x, y = tiny_data(20)
    fit(tiny_model(), (x, y), epochs=1, batch_size=10, progress=True, log_every=1)
    captured = capsys.readouterr()
    assert "img/s]" in captured.err and "epoch 1/1:" in captured.err       # the bar, in images per second
    assert "epoch 1/1  loss " in captured.out                             # the per-epoch summary line


def test_rng_state_of_the_caller_is_restored(one_thread):
    x, y = tiny_data(20)
    model = tiny_model(dropout=0.5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    quiet_fit(model, (x, y), epochs=1, batch_size=10)
    assert torch.equal(torch.get_rng_state(), before)


class RecordingPGD(rk.attacks.PGD):
    """PGD that records the budget it is called with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def __call__(self, x, y):
        self.seen.append((self.eps, self.step_size))
        return super().__call__(x, y)


def test_eps_warmup_ramps_the_budget_per_step_and_restores_it(one_thread):
    x, y = tiny_data(40)
    model = tiny_model()
    attack = RecordingPGD(model, eps=0.2, step_size=0.05, steps=2)
    objective = rk.defenses.AdversarialTraining(attack)
    history = quiet_fit(model, (x, y), objective, epochs=2, batch_size=10, eps_warmup=0.75)
    # 8 steps, a ramp over ceil(0.75 * 8) = 6 of them: (s + 1) / 6 of the budget, then all of it
    scales = [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0, 1.0, 1.0]
    assert [eps for eps, _ in attack.seen] == pytest.approx([0.2 * s for s in scales])
    assert [step for _, step in attack.seen] == pytest.approx([0.05 * s for s in scales])
    assert [e["budget_scale"] for e in history.epochs] == pytest.approx([4 / 6, 1.0])
    assert objective.budget_scale == 1.0 and (attack.eps, attack.step_size) == (0.2, 0.05)


def test_eps_warmup_resumes_on_the_uninterrupted_runs_budgets(one_thread, tmp_path):
    def run(folder, constraint, resume=False):
        x, y = tiny_data(60)
        model = tiny_model(dropout=0.3)
        objective = rk.defenses.AdversarialTraining(rk.attacks.PGD(model, eps=0.1, step_size=0.03, steps=2))
        quiet_fit(model, (x, y), objective, epochs=3, batch_size=20, optimizer="adam", lr=1e-2,
                  checkpoint_dir=folder, resume=resume, constraints=[constraint], seed=5, eps_warmup=0.6)
        return model
    straight = run(tmp_path / "a", CrashAt())
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", CrashAt(at=5))                # killed in epoch 2, inside the ramp
    assert_same_weights(weights(straight), weights(run(tmp_path / "b", CrashAt(), resume=True)))


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan"), True, "0.5"])
def test_eps_warmup_outside_zero_one_is_refused(one_thread, value):
    x, y = tiny_data(10)
    model = tiny_model()
    objective = rk.defenses.FastAdversarialTraining(eps=0.1)
    with pytest.raises(ValueError, match=r"^fit: eps_warmup must be a fraction of training in \[0, 1\)"):
        quiet_fit(model, (x, y), objective, eps_warmup=value)


def test_eps_warmup_needs_an_objective_with_a_budget(one_thread):
    x, y = tiny_data(10)
    model = tiny_model()
    with pytest.raises(ValueError, match="^fit: eps_warmup needs an objective with a perturbation budget.*Cross"):
        quiet_fit(model, (x, y), eps_warmup=0.2)
    with pytest.raises(ValueError, match="^fit: eps_warmup needs .*FreeAdversarialTraining"):
        quiet_fit(model, (x, y), rk.defenses.FreeAdversarialTraining(eps=0.1), eps_warmup=0.2)
    deepfool = rk.defenses.AdversarialTraining(rk.attacks.DeepFool(model))
    with pytest.raises(ValueError, match="^fit: eps_warmup: AdversarialTraining: the budget of DeepFool cannot"):
        quiet_fit(model, (x, y), deepfool, eps_warmup=0.2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "fit: epochs must be a positive int"),
    (dict(batch_size=-1), "fit: batch_size must be a positive int"),
    (dict(optimizer="rmsprop"), "fit: optimizer must be one of"),
    (dict(lr=0.0), "fit: lr must be a positive finite number"),
    (dict(schedule="step"), "schedule must be one of"),
    (dict(constraints=[3]), r"fit: constraints\[0\] must be callable"),
    (dict(resume=True), "fit: resume=True needs a checkpoint_dir"),
    (dict(eval_attack="pgd"), "fit: eval_attack needs eval_data"),
    (dict(guard_drop=0.0), r"fit: guard_drop must be in \(0, 1\]"),
])
def test_bad_arguments_name_themselves(one_thread, kwargs, match):
    x, y = tiny_data(10)
    with pytest.raises((ValueError, TypeError), match=match):
        quiet_fit(tiny_model(), (x, y), **kwargs)


def test_bad_data_and_models_name_themselves(one_thread):
    x, y = tiny_data(10)
    model = tiny_model()
    with pytest.raises(TypeError, match="fit: train_data must be a Dataset"):
        quiet_fit(model, [1, 2, 3])
    with pytest.raises(ValueError, match="fit: train_data is empty"):
        quiet_fit(model, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="fit: train_data labels must be int64"):
        quiet_fit(model, torch.utils.data.Subset(torch.utils.data.TensorDataset(x, y.float()), range(10)))
    with pytest.raises(ValueError, match="fit: eval_attack is bound to another model"):
        quiet_fit(model, (x, y), eval_data=(x, y), eval_attack=rk.attacks.FGSM(tiny_model(1), eps=0.1))
    with pytest.raises(ValueError, match="fit: model must be the bare module"):
        quiet_fit(nn.DataParallel(model), (x, y))
    with pytest.raises(ValueError, match="fit: overfit_guard needs an objective with an .eps"):
        quiet_fit(model, (x, y), overfit_guard=True)
