"""`robustkit reproduce distillation-cw` end to end on a tiny setting: every cell of its three tables is
measured (finite) and the report's numbers are the typed-in ones."""
from __future__ import annotations

import pytest

from tests.reproduce._check import run_tiny

TINY = dict(train_images=300, epochs=1, test_images=64, attack_images=32, temperatures=[1, 100], pgd_steps=3,
            cw_images=dict(l2=2, linf=1, l0=1),
            cw=dict(l0=dict(steps=5, binary_search_steps=2, initial_const=10.0),
                    l2=dict(steps=10, initial_const=10.0), linf=dict(steps=10, initial_const=10.0)))


def test_distillation_cw_every_table_is_filled(tmp_path, one_thread):
    out, by = run_tiny("distillation-cw", tmp_path, TINY)
    assert by[("Table 1", "eps = 0.005", "accuracy on FGSM images (%)")]["paper"] == pytest.approx(59.93)
    assert by[("Temperature sweep", "undistilled", "accuracy (%)")]["paper"] == pytest.approx(89.07)
    assert by[("Temperature sweep", "T = 100", "acc. on I-FGSM from undistilled (%)")]["paper"] == 86.0
    assert len([c for c in by.values() if c["table"] == "C&W"]) == 2 * 6       # 2 temperatures x 3 norms x 2
    assert "EMNIST" in (out / "tables.md").read_text()                   # the substitution is stated
