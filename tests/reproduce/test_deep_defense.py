"""`robustkit reproduce deep-defense` end to end on a tiny setting: every cell of Tables 1-2 and Fig. 4 is
measured (finite), the paper's numbers are the typed-in ones, and the files are written."""
from __future__ import annotations

import json
import math

import pytest

from robustkit.reproduce import PAPERS, run_paper
from tests.reproduce._check import assert_every_cell_filled

# A few hundred training images, one epoch, 32 test images, short attacks: the quick protocol's code path.
TINY = dict(train_images=600, reference_epochs=1, finetune_images=100, epochs=1, test_images=32,
            deepfool_set_images=100, fig4_c=[25], fig4_images=100,
            attack_steps=dict(deepfool=20, cw=10, pgd=5, apgd=5))


def test_deep_defense_mlp_tables_are_filled(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("ROBUSTKIT_CACHE", str(tmp_path / "cache"))
    out = run_paper("deep-defense", out=tmp_path / "run", progress=False, limit=dict(TINY, nets=["MLP"]))
    cells = json.loads((out / "results.json").read_text())["cells"]
    mlp = [c for c in cells if c["row"].startswith("MLP")]
    assert len(mlp) == 4 * (6 + 5)          # 4 methods x (Table 1: 6 columns, Table 2: 5 columns)
    assert all(c["ours"] is not None and math.isfinite(c["ours"]) for c in mlp), mlp
    ours = {(c["row"], c["column"]): c for c in mlp}
    assert ours[("MLP Deep Defense", "rho_2")]["paper"] == pytest.approx(0.225)     # Table 1, "Ours"
    assert ours[("MLP Adv. Train I", "rho_2")]["paper"] == pytest.approx(0.162)
    assert ours[("MLP Reference", "acc. PGD @0.1 (%)")]["paper"] == pytest.approx(1.19)   # Table 2
    bars = json.loads((out / "results.json").read_text())["bars"]          # Table 1's rho_2, drawn as bars
    assert [b["labels"] for b in bars] == [["MLP Reference", "MLP Par. Train", "MLP Adv. Train I",
                                             "MLP Deep Defense"]]
    assert bars[0]["groups"]["ours"] == [ours[(row, "rho_2")]["ours"] for row in bars[0]["labels"]]
    assert bars[0]["groups"]["paper"][3] == pytest.approx(0.225)


@pytest.mark.slow
def test_deep_defense_every_table_is_filled(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("ROBUSTKIT_CACHE", str(tmp_path / "cache"))
    out = run_paper("deep-defense", out=tmp_path / "run", progress=False, limit=TINY)
    cells = assert_every_cell_filled(out, PAPERS["deep-defense"])["cells"]
    assert list(PAPERS["deep-defense"].tables) == ["Table 1", "Table 2", "Fig. 4"]
    assert len([c for c in cells if c["table"] == "Fig. 4"]) == 4 * 2       # 4 layers x (rho_2, accuracy)
    assert (out / "report.html").is_file()
