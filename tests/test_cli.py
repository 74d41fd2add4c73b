"""The `robustkit` command: the demo in --fast mode (its report and table agree with results.json), eval of
the demo's saved weights, and the one-line error paths."""
import csv
import html.parser
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch

from robustkit.cli import main
from robustkit.cli.options import format_table
from robustkit.eval.report import SETTING_COLUMNS, fmt


class _Cells(html.parser.HTMLParser):
    """Collects (data-key, data-value, shown text) of every number cell of report.html."""

    def __init__(self):
        super().__init__()
        self.cells, self._open = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-key" in attrs:
            self._open = [attrs["data-key"], attrs["data-value"], ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[2] += data

    def handle_endtag(self, tag):
        if self._open is not None:
            self.cells.append(tuple(self._open))
            self._open = None


def _lookup(results, key):
    """The value at a report cell's key path; None where results.json has no such entry (shown as "-")."""
    value = results
    for part in key.split("/"):
        value = value[int(part)] if isinstance(value, list) else value.get(part)
        if value is None:
            return None
    return value


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    # one intra-op thread: two threads per process oversubscribe the busy 2-core test machine (10-40x slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("demo")
        assert main(["demo", "--fast", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_demo_fast_report_numbers_come_from_results_json(demo_dir, capsys):
    results = json.loads((demo_dir / "results.json").read_text())
    assert {"fgsm@0.1", "fgsm@0.3", "pgd", "mifgsm", "dmifgsm"} <= set(results["attacks"])
    sweep = results["curves"]["fgsm"]
    assert sweep["eps"] == [0.05, 0.1, 0.2, 0.3] and sweep["accuracy"][0] >= sweep["accuracy"][-1]
    assert results["clean"]["accuracy"] > 0.8                       # a trained model, not a random one
    pgd = results["attacks"]["pgd"]["metrics"]
    assert pgd["robust_accuracy"] < pgd["clean_accuracy"]            # the attack does something
    parser = _Cells()
    parser.feed((demo_dir / "report.html").read_text())
    assert len(parser.cells) > 20
    for key, raw, shown in parser.cells:
        value = _lookup(results, key)
        assert raw == ("" if value is None else value if isinstance(value, str) else repr(value)), key
        assert shown == fmt(value), key
    for plot in ("accuracy_vs_eps", "examples", "gradcam", "confusion"):
        assert (demo_dir / "plots" / f"{plot}.png").stat().st_size > 1000, plot
    csv_lines = (demo_dir / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("attack,") and len(csv_lines) == 1 + len(results["attacks"])
    for line in format_table(results).splitlines()[1:]:
        name = line.split()[0]
        entry = results["attacks"][name]
        robust = fmt(entry["metrics"]["robust_accuracy"])
        if entry["attack"]["kind"] == "minimal_norm":   # its robust accuracy is blanked: the norms speak for it
            assert line.split()[4] == "-" and fmt(entry["metrics"]["l2_median"]) in line, line
        else:
            assert line.split()[4] == robust, line


def test_demo_headline_is_the_worst_case_of_the_fixed_budget_attacks(demo_dir):
    results = json.loads((demo_dir / "results.json").read_text())
    worst = results["worst_case"]
    # DeepFool and C&W always succeed: they must not be the headline's robust accuracy
    assert (worst["norm"], worst["eps"]) == ("linf", 0.1)
    assert worst["attacks"] == ["fgsm@0.1", "pgd", "mifgsm", "dmifgsm"]
    assert worst["robust_accuracy"] <= min(results["attacks"][a]["metrics"]["robust_accuracy"]
                                           for a in worst["attacks"])
    assert worst["robust_accuracy"] > 0.2        # PGD-5 at 0.1 leaves most of a trained LeNet standing
    report = (demo_dir / "report.html").read_text()
    headline = report[report.index('id="summary"'):report.index("</section>", report.index('id="summary"'))]
    assert 'data-key="worst_case/robust_accuracy"' in headline and "deepfool" in headline and "cw" in headline
    assert "Robust accuracy" in headline and "median L2" in headline


def test_demo_report_shows_every_attack_and_links_resolve(demo_dir):
    results = json.loads((demo_dir / "results.json").read_text())
    report = (demo_dir / "report.html").read_text()
    ids = set(re.findall(r'id="([^"]+)"', report))
    links = re.findall(r'href="#([^"]+)"', report)
    assert len(links) >= 8 and set(links) <= ids
    for key in ("confusion", "examples", "gradcam"):
        shown, omitted = re.search(rf'<section id="{key}" data-shown="([^"]*)" data-omitted="([^"]*)"',
                                   report).groups()
        shown, omitted = (json.loads(html.unescape(v)) for v in (shown, omitted))
        assert shown == list(results["attacks"]) and omitted == [], key      # C&W included
    assert "evaluated only on the attacked model itself" in report
    assert report.count("<details>") >= 2 and report.count('data-key="clean/per_class/accuracy/') == 10
    with open(demo_dir / "results.csv", newline="") as f:
        rows = {r["attack"]: r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values())))[-len(SETTING_COLUMNS):] == list(SETTING_COLUMNS)
    assert rows["pgd"]["eps"] == "0.1" and rows["pgd"]["steps"] == "5" and rows["fgsm@0.3"]["eps"] == "0.3"
    assert rows["deepfool"]["attack_type"] == "minimal_norm" and rows["deepfool"]["eps"] == ""


CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
# after the page has loaded: its height and the number of images that failed to decode, as body attributes
_PROBE = ("<script>window.addEventListener('load', function () { var broken = 0;"
          " for (const i of document.images) { if (!i.complete || i.naturalWidth === 0) broken++; }"
          " document.body.setAttribute('data-height', document.documentElement.scrollHeight);"
          " document.body.setAttribute('data-broken', broken); });</script></body>")


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless chromium on PATH (e.g. apt-get install chromium) "
                                             "to render report.html")
def test_demo_report_renders_in_headless_chromium(demo_dir, tmp_path):
    from PIL import Image           # Pillow comes with matplotlib

    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,2000"]
    probe = tmp_path / "probe.html"
    probe.write_text((demo_dir / "report.html").read_text().replace("</body>", _PROBE))
    dom = subprocess.run(browser + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180).stdout
    found = dict(re.findall(r'data-(height|broken)="(\d+)"', dom))
    assert found.get("broken") == "0", "an embedded figure did not decode"
    # 9 attacks, 8 example images: the whole report in at most ~3 screens at 1400 px wide
    assert 2000 < int(found["height"]) < 6000, found
    shot = tmp_path / "report.png"
    subprocess.run(browser + [f"--screenshot={shot}", (demo_dir / "report.html").as_uri()], capture_output=True,
                   timeout=180, check=True)
    image = Image.open(shot).convert("L")
    assert image.size == (1400, 2000)
    histogram = image.histogram()
    ink = sum(histogram[:200]) / (1400 * 2000)
    assert 0.02 < ink < 0.6, ink            # text, tables and a figure on a mostly white page
    assert sum(1 for count in histogram if count) > 50      # anti-aliased text and plots, not a flat fill


def test_eval_reloads_the_demo_weights_and_matches_the_demo(demo_dir, tmp_path, capsys):
    demo = json.loads((demo_dir / "results.json").read_text())
    code = main(["eval", "--model", "robustkit.models:LeNet", "--weights", str(demo_dir / "model.pt"),
                 "--data", "mnist", "--attack", "fgsm", "--eps", "1/10", "--limit", "100", "--out",
                 str(tmp_path / "ev"), "--no-report"])
    assert code == 0
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert ev["attacks"]["fgsm"]["metrics"] == demo["attacks"]["fgsm@0.1"]["metrics"]
    assert "fgsm" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--model", "no_such_module:Net"], "--model: cannot import"),
    (["--model", "robustkit.models"], "--model: expected pkg.module:Factory"),
    (["--model", "robustkit.models:LeNet", "--data", "cifar10:/no/such/dir"], "--data"),
    (["--model", "robustkit.models:LeNet", "--eps", "8/zero"], "--eps"),
    (["--model", "robustkit.models:MLP", "--weights", "DEMO"], "does not match MLP"),
    (["--model", "robustkit.models:LeNet", "--weights", "/no/such.pt"], "--weights: no file"),
])
def test_user_errors_print_one_line_and_exit_2(argv, message, demo_dir, tmp_path, capsys):
    argv = [str(demo_dir / "model.pt") if a == "DEMO" else a for a in argv]
    assert main(["eval", *argv, "--limit", "4", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_attack_is_an_argparse_error_listing_the_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--model", "robustkit.models:LeNet", "--attack", "bogus", "--out", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--attack" in err and "'bogus'" in err and "deepfool" in err and "Traceback" not in err


def test_python_dash_m_reports_a_bad_factory_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "robustkit", "eval", "--model", "robustkit.models:NoSuchNet",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "robustkit eval: error: --model: 'robustkit.models' has no callable 'NoSuchNet'"


def test_transfer_command_writes_the_matrix(tmp_path, capsys):
    lenet, mlp = "robustkit.models:LeNet", "robustkit.models:MLP"
    code = main(["transfer", "--sources", f"{lenet},{lenet}+{mlp}", "--targets", f"{mlp},{lenet}", "--data", "mnist",
                 "--attack", "fgsm", "--eps", "0.3", "--limit", "20", "--batch-size", "20", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    matrix = json.loads((tmp_path / "transfer.json").read_text())
    assert matrix["sources"] == [lenet, f"{lenet}+{mlp}"] and matrix["targets"] == [mlp, lenet]
    assert len(matrix["matrix"]) == 2 and all(len(row) == 2 for row in matrix["matrix"])
    # rows come from the per-source runs' own results
    for source, row in zip(matrix["sources"], matrix["matrix"]):
        run = json.loads((pathlib.Path(matrix["runs"][source]) / "results.json").read_text())
        assert row == [run["attacks"]["attack"]["transfer"][t] for t in matrix["targets"]]
    assert main(["transfer", "--sources", lenet, "--targets", mlp, "--attack", "fgsm", "--attack", "pgd",
                 "--out", str(tmp_path / "two")]) == 2
    assert "transfer takes one attack" in capsys.readouterr().err


# ---- weights are applied or refused for every model spec ----------------------------------------------------

def _clean_accuracy(out):
    return json.loads((out / "results.json").read_text())["clean"]["accuracy"]


def _eval(model, out, *extra):
    return main(["eval", "--model", model, "--data", "mnist", "--attack", "fgsm", "--eps", "0.1", "--limit", "20",
                 "--batch-size", "20", "--no-report", "--out", str(out), *extra])


def test_weights_for_an_ensemble_and_for_mnist_arch_are_applied_or_refused(demo_dir, tmp_path, capsys):
    from robustkit.models import MLP
    from robustkit.nn import Ensemble
    lenet = "robustkit.models:LeNet"
    weights = str(demo_dir / "model.pt")
    assert _eval(lenet, tmp_path / "single", "--weights", weights) == 0
    single = _clean_accuracy(tmp_path / "single")
    assert single > 0.8
    # a single LeNet's state dict is not an ensemble's: refused, naming the keys
    assert _eval(f"{lenet}+{lenet}", tmp_path / "e1", "--weights", weights) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "missing keys: members.0." in err and "unexpected keys: normalize" not in err
    # the ensemble's own state dict (members.<k>.*) is applied
    state = torch.load(weights, weights_only=True)
    ensemble = {f"members.{k}.{key}": v for k in range(2) for key, v in state.items()}
    torch.save(ensemble, tmp_path / "ensemble.pt")
    assert _eval(f"{lenet}+{lenet}", tmp_path / "e2", "--weights", str(tmp_path / "ensemble.pt")) == 0
    assert _clean_accuracy(tmp_path / "e2") == single
    # members may carry their own weights
    assert _eval(f"{lenet}@{weights}+{lenet}@{weights}", tmp_path / "e3") == 0
    assert _clean_accuracy(tmp_path / "e3") == single
    # mnist:<arch> --weights loads them into the architecture instead of using the zoo's model
    assert _eval("mnist:lenet", tmp_path / "m1", "--weights", weights) == 0
    assert _clean_accuracy(tmp_path / "m1") == single
    torch.save(MLP().state_dict(), tmp_path / "mlp.pt")
    assert _eval("mnist:lenet", tmp_path / "m2", "--weights", str(tmp_path / "mlp.pt")) == 2
    err = capsys.readouterr().err
    assert "does not match LeNet" in err and "missing keys" in err and "unexpected keys" in err
    # the retrain command shares the path
    assert main(["retrain", "--model", "mnist:lenet", "--weights", str(tmp_path / "mlp.pt"), "--n-train", "50",
                 "--n-test", "10", "--n-adversarial", "5", "--out", str(tmp_path / "r")]) == 2
    assert "does not match LeNet" in capsys.readouterr().err
    assert Ensemble  # the a+b spec builds robustkit.nn.Ensemble (its state-dict keys are members.<k>.*)


# ---- clear errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["eval", "--model", "robustkit.models:LeNet", "--steps", "0", "--out", "x"], "--steps: must be >= 1, got 0"),
    (["eval", "--model", "robustkit.models:LeNet", "--limit", "-3", "--out", "x"], "--limit: must be >= 1"),
    (["retrain", "--pca-dim", "0", "--out", "x"], "--pca-dim: must be >= 1, got 0"),
    (["retrain", "--n-adversarial", "10", "0", "--out", "x"], "--n-adversarial: must be >= 1, got 0"),
])
def test_zero_counts_are_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_steps_with_fgsm_alone_is_refused(tmp_path, capsys):
    assert main(["eval", "--model", "robustkit.models:LeNet", "--attack", "fgsm", "--steps", "3", "--limit", "4",
                 "--out", str(tmp_path)]) == 2
    assert "--steps: fgsm takes a single step" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [("bogus", "--device: unknown device 'bogus'"),
                                             ("cuda", "--device: 'cuda' requested but CUDA is not available"),
                                             ("meta", "--device: 'meta' is not supported")])
def test_bad_devices_are_named(device, message, tmp_path, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["eval", "--model", "robustkit.models:LeNet", "--device", device, "--limit", "4",
                 "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_out_pointing_at_a_file_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["eval", "--model", "robustkit.models:LeNet", "--limit", "4", "--out", str(out)]) == 2
        assert "--out" in capsys.readouterr().err


def test_corrupt_run_files_are_named(tmp_path, capsys):
    out = tmp_path / "run"
    assert _eval("robustkit.models:LeNet", out) == 0
    (out / "run.json").write_text('{"settings": {"seed": ')
    assert _eval("robustkit.models:LeNet", out, "--resume") == 2
    err = capsys.readouterr().err
    assert "run.json is not valid JSON" in err and str(out) in err
    (out / "results.json").write_text("{broken")
    assert main(["report", str(out)]) == 2
    assert "results.json is not valid JSON" in capsys.readouterr().err


class _NotWeights:     # unpickling this needs weights_only=False, which the report never uses
    pass


def test_report_refuses_an_examples_file_it_cannot_load_safely(tmp_path, capsys):
    out = tmp_path / "run"
    assert _eval("robustkit.models:LeNet", out) == 0
    torch.save({"x": _NotWeights()}, out / "examples.pt")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "examples.pt is not a loadable examples file" in err and "Traceback" not in err


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import errno
    import os

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    assert _eval("robustkit.models:LeNet", tmp_path / "full") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("robustkit eval: error: disk full writing") and "rank-0.jsonl" in errors[0]


def test_targeted_eval_from_the_command_line(tmp_path, capsys):
    assert _eval("robustkit.models:LeNet", tmp_path / "t", "--target", "random", "--attack", "pgd") == 0
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    assert results["settings"]["target"] == "random" and "targeted_success" in results["attacks"]["pgd"]["metrics"]


def _subcommands():
    from robustkit.cli import build_parser
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


@pytest.mark.parametrize("command", __import__("robustkit.cli", fromlist=["COMMANDS"]).COMMANDS)
def test_every_option_has_help(command):
    for action in _subcommands()[command]._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


def test_help_lists_the_attacks_and_shows_no_raw_rest():
    commands = _subcommands()
    text = commands["eval"].format_help()
    assert all(a in text for a in ("fgsm", "pgd", "mifgsm", "dmifgsm", "deepfool", "cw"))
    for command in commands.values():
        help_text = command.format_help()
        assert "``" not in help_text and ":mod:" not in help_text and ":func:" not in help_text
