"""``robustkit reproduce retraining`` end to end on a tiny setting (LeNet trained on 2,000 MNIST images, 50
test images, 20-200 adversarial images, GAP 1 epoch, C&W 1 x 10 steps): every table filled."""
from __future__ import annotations

import pytest

import robustkit.reproduce.retraining as retraining
from robustkit.reproduce import run_paper
from tests.reproduce._check import assert_every_cell_filled, model_cache

TINY = {"train_images": 2000, "test_images": 50, "label_images": 20, "original_images": 200, "ratios": [1.0, 0.25],
        "whitebox_images": 20, "cw_searches": 1, "cw_steps": 10, "gap_fit": 128, "gap_epochs": 1,
        "fooling_images": 50}


@pytest.fixture
def cache(tmp_path):
    with model_cache(tmp_path / "cache") as folder:
        yield folder


def test_every_table_is_filled(cache, tmp_path, one_thread):
    out = run_paper("retraining", out=tmp_path / "run", limit=TINY, progress=False)
    results = assert_every_cell_filled(out, retraining.PAPER)
    cells = {(c["table"], c["row"], c["column"]): c for c in results["cells"]}
    gap_row = cells[("Table 1", "200 adversarial (1 x originals)", "fooling ratio, re-attacked")]
    assert gap_row["paper"] == 0.13 and 0 <= gap_row["ours"] <= 1
    assert cells[("Table 5", "50 adversarial (0.25 x originals)", "acc. adversarial after")]["paper"] == 0.885
    assert cells[("Table 7", "GAP", "adversarial training images")]["paper"] == 0.9829
    assert ("Table 5", "200 adversarial, source labels", "acc. original after") in cells
    assert cells[("Fooling class", "uniform noise", "flagged as fooling")]["ours"] > 0.5
    assert "CIFAR-10 with --data DIR" in (out / "tables.md").read_text()


@pytest.mark.slow
def test_cifar10_rows_when_data_holds_it(cache, tmp_path, shared_data, one_thread):
    limit = {**TINY, "cifar_train_images": 2000, "cifar_epochs": 1}   # PCA(300) needs more than 500 images
    out = run_paper("retraining", out=tmp_path / "run", limit=limit, data_dir=shared_data, progress=False)
    results = assert_every_cell_filled(out, retraining.PAPER)
    rows = {c["row"] for c in results["cells"]}
    assert "CIFAR-10: GAP" in rows and "MNIST: GAP" in rows
    assert list((cache / "reproduce").glob("retraining-cifar-cnn-*.pt"))
