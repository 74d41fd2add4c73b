"""The reproduce framework on a toy paper: settings and CI limits, memoised steps and resume, the model
cache keyed by recipe, the three writers, ctx.evaluate, and the command line (--list, a bad name -> 2)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import robustkit.reproduce as reproduce
from robustkit.cli import main
from robustkit.reproduce import run_paper
from robustkit.reproduce.protocol import Cell, Context, Paper, recipe_key


class Calls:
    def __init__(self):
        self.train, self.steps, self.fail_once = 0, 0, False


def toy_paper(calls: Calls, recipe_lr: float = 0.1) -> Paper:
    def train(model, ckpt_dir):
        calls.train += 1
        assert ckpt_dir.is_dir()
        with torch.no_grad():
            model.weight.fill_(recipe_lr)

    def measure(k):
        def fn():
            calls.steps += 1
            if calls.fail_once and k == 1:
                calls.fail_once = False
                raise KeyboardInterrupt     # as a killed run
            return {"value": k / 3, "pair": (k, k + 1)}
        return fn

    def run(ctx: Context) -> None:
        s = ctx.scale_settings(quick=dict(images=10, steps=2), full=dict(images=1000, steps=2))
        model = ctx.model("linear", recipe={"lr": recipe_lr, "seed": 0}, build=lambda: nn.Linear(2, 2),
                          train=train)
        assert not model.training
        for k in range(s.steps + 1):
            value = ctx.step(f"measure-{k}", measure(k))
            ctx.cell("Table 1", row=f"row {k}", column="value", paper=0.5, ours=value["value"])
        ctx.cell("Table 1", row="weight", column="w", paper=None, ours=model.weight[0, 0].item(), fmt=".2f")
        ctx.note("Table 1", "a toy table")
        ctx.series("Fig. 1", name="ours", x=[1, 2, 4], y=[0.1, 0.2, 0.3], xlabel="T", ylabel="success")
        ctx.heatmap("Fig. 2", rows=["a", "b"], cols=["c", "d"], values=[[0.1, 0.2], [0.3, 0.4]], label="success")
        ctx.bars("Table 1", labels=["m1", "m2"], groups={"ours": [0.25, 0.5], "paper": [0.125, None]},
                 ylabel="rho_2")

    return Paper(name="toy", title="A toy paper (Nobody, 2024)",
                 tables={"Table 1": "toy numbers", "Fig. 1": "a toy curve", "Fig. 2": "a toy matrix"}, run=run)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def toy(monkeypatch, cache):
    calls = Calls()
    monkeypatch.setattr(reproduce, "PAPERS", {"toy": toy_paper(calls)})
    return calls


def test_cell_difference():
    assert Cell("T", "r", "c", paper=0.5, ours=0.75).difference == 0.25
    assert Cell("T", "r", "c", paper=None, ours=0.75).difference is None
    assert Cell("T", "r", "c", paper=0.5, ours=None).difference is None


def test_scale_settings_apply_the_limit_to_known_keys_only(tmp_path):
    paper = toy_paper(Calls())
    ctx = Context(paper, scale="full", out=tmp_path, limit={"images": 5, "unknown": 1})
    s = ctx.scale_settings(quick=dict(images=10, epochs=1), full=dict(images=1000, epochs=3))
    assert (s.images, s.epochs) == (5, 3) and not hasattr(s, "unknown")
    with pytest.raises(ValueError, match="scale must be one of"):
        Context(paper, scale="medium", out=tmp_path)


def test_writers_produce_every_cell_note_and_figure(toy, tmp_path):
    out = run_paper("toy", out=tmp_path / "run", progress=False)
    tables = (out / "tables.md").read_text()
    assert "| row 1 | value | 0.500 | 0.333 | -0.167 |" in tables
    assert "| weight | w | — | 0.10 | — |" in tables and "- a toy table" in tables
    assert "| T | ours (success) |" in tables and "| 4 | 0.300 |" in tables and "| b | 0.300 | 0.400 |" in tables
    results = json.loads((out / "results.json").read_text())
    assert {"command", "scale", "seed", "versions", "machine", "wall_seconds"} <= set(results)
    assert results["versions"]["torch"] == torch.__version__ and results["scale"] == "quick"
    assert len(results["cells"]) == 4 and math.isclose(results["cells"][0]["difference"], -0.5)
    assert "| | ours | paper |" in tables and "| m2 | 0.500 | — |" in tables
    [bars] = results["bars"]
    assert (bars["figure"], bars["labels"], bars["ylabel"]) == ("Table 1", ["m1", "m2"], "rho_2")
    assert bars["groups"]["ours"] == [0.25, 0.5] and bars["groups"]["paper"][0] == 0.125
    assert bars["groups"]["paper"][1] is None or math.isnan(bars["groups"]["paper"][1])   # the gap
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 3 and "toy numbers" in page and "0.333" in page
    # the bar chart sits in Table 1's section, before Fig. 1's curve
    assert page.index("<svg") < page.index("<h2>Fig. 1</h2>")


def test_bars_need_one_value_per_label(tmp_path):
    ctx = Context(toy_paper(Calls()), scale="quick", out=tmp_path)
    with pytest.raises(ValueError, match="one value per label"):
        ctx.bars("Table 1", labels=["a", "b"], groups={"ours": [1.0]}, ylabel="rho_2")


def test_step_memo_and_resume_give_the_same_tables(toy, tmp_path):
    whole = run_paper("toy", out=tmp_path / "whole", progress=False)
    assert toy.steps == 3
    toy.steps, toy.fail_once = 0, True
    with pytest.raises(KeyboardInterrupt):
        run_paper("toy", out=tmp_path / "cut", progress=False)
    assert toy.steps == 2 and (tmp_path / "cut" / "steps" / "measure-0.json").is_file()
    with pytest.raises(ValueError, match="holds an earlier run"):
        run_paper("toy", out=tmp_path / "cut", progress=False)
    toy.steps = 0
    run_paper("toy", out=tmp_path / "cut", resume=True, progress=False)
    assert toy.steps == 2                      # measure-0 was read back, 1 and 2 ran
    assert (tmp_path / "cut" / "tables.md").read_text() == (whole / "tables.md").read_text()
    with pytest.raises(ValueError, match="other settings"):
        run_paper("toy", out=tmp_path / "cut", resume=True, seed=1, progress=False)


def test_a_resume_with_other_settings_is_refused(tmp_path):
    first = Context(toy_paper(Calls()), out=tmp_path)
    first.scale_settings(quick=dict(images=10), full=dict(images=100))
    again = Context(toy_paper(Calls()), out=tmp_path, resume=True)
    assert again.scale_settings(quick=dict(images=10), full=dict(images=100)).images == 10
    with pytest.raises(ValueError, match="images: 10 -> 20"):
        Context(toy_paper(Calls()), out=tmp_path, resume=True).scale_settings(quick=dict(images=20),
                                                                              full=dict(images=100))
    twice = Context(toy_paper(Calls()), out=tmp_path / "twice")      # a paper may ask twice, other values
    twice.scale_settings(quick=dict(epochs=1), full=dict(epochs=1))
    twice.scale_settings(quick=dict(epochs=5), full=dict(epochs=5))
    resumed = Context(toy_paper(Calls()), out=tmp_path / "twice", resume=True)
    assert resumed.scale_settings(quick=dict(epochs=1), full=dict(epochs=1)).epochs == 1
    assert resumed.scale_settings(quick=dict(epochs=5), full=dict(epochs=5)).epochs == 5


def test_step_returns_what_json_reads_back(tmp_path):
    ctx = Context(toy_paper(Calls()), out=tmp_path, resume=True)
    assert ctx.step("a", lambda: {"t": (1, 2), "nan": float("nan")}) == {"t": [1, 2], "nan": None}
    assert ctx.step("a", lambda: 1 / 0) == {"t": [1, 2], "nan": None}
    with pytest.raises(TypeError, match="JSON-able"):
        ctx.step("b", lambda: object())
    with pytest.raises(ValueError, match="plain file name"):
        ctx.step("../x", lambda: 1)


def test_a_step_draws_the_same_random_numbers_wherever_it_runs(tmp_path):
    ctx = Context(toy_paper(Calls()), out=tmp_path)
    draw = lambda: torch.rand(3).tolist()  # noqa: E731
    first = ctx.step("draw", draw)
    torch.rand(100)                        # another history before the step: the same numbers
    again = Context(toy_paper(Calls()), out=tmp_path / "other").step("draw", draw)
    assert first == again != Context(toy_paper(Calls()), out=tmp_path / "s1", seed=1).step("draw", draw)
    before = torch.get_rng_state()
    ctx.step("draw-2", draw)
    assert torch.equal(torch.get_rng_state(), before)     # the caller's random state is left alone


def test_model_cache_is_keyed_by_recipe(cache, tmp_path, monkeypatch):
    calls = Calls()
    monkeypatch.setattr(reproduce, "PAPERS", {"toy": toy_paper(calls, 0.1)})
    run_paper("toy", out=tmp_path / "a", progress=False)
    run_paper("toy", out=tmp_path / "b", progress=False)       # another run: loaded from the cache
    assert calls.train == 1
    assert len(list((cache / "reproduce").glob("linear-*.pt"))) == 1
    monkeypatch.setattr(reproduce, "PAPERS", {"toy": toy_paper(calls, 0.25)})
    out = run_paper("toy", out=tmp_path / "c", progress=False)  # another recipe: trained again
    assert calls.train == 2 and "| weight | w | — | 0.25 | — |" in (out / "tables.md").read_text()
    saved = next((cache / "reproduce").glob("linear-*.pt"))
    assert set(torch.load(saved, weights_only=True)) == {"weight", "bias"}
    assert recipe_key("m", {"lr": 1}, 0) != recipe_key("m", {"lr": 2}, 0) != recipe_key("m", {"lr": 2}, 1)


def test_cells_are_checked(tmp_path):
    ctx = Context(toy_paper(Calls()), out=tmp_path)
    with pytest.raises(ValueError, match="table must be one of"):
        ctx.cell("Table 9", row="r", column="c", paper=None, ours=1.0)
    ctx.cell("Table 1", row="r", column="c", paper=None, ours=1.0)
    with pytest.raises(ValueError, match="already recorded"):
        ctx.cell("Table 1", row="r", column="c", paper=None, ours=2.0)
    with pytest.raises(TypeError, match="ours must be a number"):
        ctx.cell("Table 1", row="r2", column="c", paper=None, ours="high")
    with pytest.raises(ValueError, match="same length"):
        ctx.series("Fig. 1", name="s", x=[1, 2], y=[1], xlabel="x", ylabel="y")


def test_evaluate_is_resumable_under_out(tmp_path, one_thread):
    from robustkit.attacks import FGSM
    from tests._tiny import mnist_images, small_lenet
    model = small_lenet()
    x, y = mnist_images(16)
    ctx = Context(toy_paper(Calls()), out=tmp_path, progress=False)
    first = ctx.evaluate("fgsm", model, {"fgsm": FGSM(model, eps=0.1)}, x, y, batch_size=8, checks="off")
    again = ctx.evaluate("fgsm", model, {"fgsm": FGSM(model, eps=0.1)}, x, y, batch_size=8, checks="off")
    assert (tmp_path / "evals" / "fgsm" / "results.json").is_file()
    assert first["attacks"]["fgsm"]["metrics"] == again["attacks"]["fgsm"]["metrics"]
    assert 0 <= first["attacks"]["fgsm"]["metrics"]["robust_accuracy"] <= 1


def test_cli_list_names_every_paper(capsys):
    assert main(["reproduce", "--list"]) == 0
    shown = capsys.readouterr().out
    for name in ("self-distillation", "retraining", "distillation-cw", "defendr", "deep-defense"):
        assert name in shown


def test_cli_bad_name_lists_the_valid_names_and_exits_2(capsys):
    assert main(["reproduce", "no-such-paper"]) == 2
    err = capsys.readouterr().err
    assert "unknown paper 'no-such-paper'" in err and "self-distillation" in err and "deep-defense" in err
    assert main(["reproduce"]) == 2


def test_cli_runs_a_paper(toy, tmp_path, capsys):
    assert main(["reproduce", "toy", "--out", str(tmp_path / "cli"), "--seed", "3"]) == 0
    assert "| row 2 | value |" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["seed"] == 3


def test_a_missing_paper_module_does_not_break_the_others(monkeypatch):
    papers = reproduce._Papers({"present": "protocol", "absent": "no_such_module"})
    with pytest.raises(reproduce.PaperUnavailable, match="not in this installation"):
        papers["absent"]
    assert list(papers) == ["present", "absent"]


def test_the_recorded_command_is_the_one_typed(monkeypatch):
    monkeypatch.setattr(reproduce.sys, "argv", ["/somewhere/robustkit/__main__.py", "reproduce", "retraining"])
    assert reproduce.command_line().endswith(" -m robustkit reproduce retraining")
    monkeypatch.setattr(reproduce.sys, "argv", ["bench/retraining.py", "--tiny"])
    assert reproduce.command_line().endswith(" bench/retraining.py --tiny")
