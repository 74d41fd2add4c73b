"""`robustkit retrain`: a tiny MNIST run writes the seed's columns to retraining.json and retraining.md (the
markdown cells are the JSON values), one row per (n_adversarial, labels); user errors exit with status 2."""
import json

import pytest

from robustkit.cli import main
from robustkit.cli.retrain import COLUMNS


pytestmark = pytest.mark.usefixtures("one_thread")


def test_retrain_writes_the_seed_columns(tmp_path):
    out = tmp_path / "run"
    assert main(["retrain", "--attack", "fgsm", "--eps", "0.1", "--n-train", "300", "--n-test", "40",
                 "--n-adversarial", "30", "20", "--pca-dim", "10", "--labels", "labeler", "source",
                 "--out", str(out)]) == 0
    result = json.loads((out / "retraining.json").read_text())
    rows = result["rows"]
    assert [(r["n_adversarial"], r["labels"]) for r in rows] == [(30, "labeler"), (30, "source"), (20, "labeler"),
                                                                  (20, "source")]
    assert result["config"]["eps"] == 0.1 and result["config"]["pca_dim"] == 10
    for row in rows:
        for key in ("accuracy_original", "accuracy_adversarial", "fooling_ratio_before", "fooling_ratio_after",
                    "labeler_accuracy"):
            assert 0 <= row[key] <= 1
        assert row["fooling_classes"] == 0  # no fooling threshold: no fooling images
    lines = (out / "retraining.md").read_text().splitlines()
    assert len(lines) == 2 + len(rows)
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    assert first[[k for k, _ in COLUMNS].index("fooling_ratio_before")] == f"{100 * rows[0]['fooling_ratio_before']:.1f}%"
    assert first[0] == "fgsm" and first[1] == "30"


def test_retrain_user_errors(tmp_path, capsys):
    assert main(["retrain", "--data", "cifar10:" + str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["retrain", "--n-train", "100", "--fooling-threshold", "far", "--n-adversarial", "10",
                 "--out", str(tmp_path)]) == 2
    assert "--fooling-threshold" in capsys.readouterr().err
