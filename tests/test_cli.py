"""The `robustkit` command: the demo in --fast mode (its report and table agree with results.json), eval of
the demo's saved weights, and the one-line error paths."""
import html.parser
import json
import pathlib
import subprocess
import sys

import pytest
import torch

from robustkit.cli import main
from robustkit.cli.options import format_table
from robustkit.eval.report import fmt


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
        assert raw == ("" if value is None else repr(value)), key
        assert shown == fmt(value), key
    for plot in ("accuracy_vs_eps", "examples", "gradcam", "confusion"):
        assert (demo_dir / "plots" / f"{plot}.png").stat().st_size > 1000, plot
    csv_lines = (demo_dir / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("attack,") and len(csv_lines) == 1 + len(results["attacks"])
    for line in format_table(results).splitlines()[1:]:
        name = line.split()[0]
        assert fmt(results["attacks"][name]["metrics"]["robust_accuracy"]) in line


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
