"""`robustkit reproduce defendr` end to end on a tiny setting: every cell of Tables 1-4, the confusion matrix
and Grad-CAM is measured (finite), the seed's numbers are the typed-in ones, and the figures are recorded."""
from __future__ import annotations

import pytest

from tests.reproduce._check import run_tiny

TINY = dict(train_images=300, epochs=1, test_images=16, denoiser_images=100, denoiser_epochs=1,
            denoiser_widths=[4, 4, 8, 8], pgd_steps=2, bpda_steps=2, eot=2, draws=2)


# 9 trainings (5 classifiers, 4 denoisers) and 18 evaluations: ~25 CPU s, over a minute of wall time on the
# shared 2-core machine, so it is marked slow.
@pytest.mark.slow
def test_defendr_every_table_is_filled(tmp_path, one_thread):
    out, by = run_tiny("defendr", tmp_path, TINY)
    assert by[("Table 1", "MNIST DUNET, Adv. Train", "100% adv. (%)")]["paper"] == pytest.approx(86.6)
    assert by[("Table 3", "MNIST DUNET + ALP + CLP", "FGSM (0.12), 100% adv. (%)")]["paper"] == pytest.approx(84.86)
    assert by[("Table 4", "MNIST DUNET PGD (0.3)", "FGSM (%)")]["paper"] == pytest.approx(49.7)
    assert len([c for c in by.values() if c["table"] == "Table 1"]) == 7 * 4
    assert "ImageNet" in (out / "tables.md").read_text()            # the substitution is stated
    assert (out / "report.html").is_file()
