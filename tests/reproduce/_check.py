"""Checks the paper tests share: every declared table of a finished run has cells, and every cell has a
finite number of ours."""
from __future__ import annotations

import json
import math
import os
import pathlib
from contextlib import contextmanager


def assert_every_cell_filled(out: pathlib.Path, paper) -> dict:
    results = json.loads((pathlib.Path(out) / "results.json").read_text())
    for table in paper.tables:
        cells = [c for c in results["cells"] if c["table"] == table]
        assert cells, f"{table} has no cells"
        empty = [f"{c['row']} / {c['column']}" for c in cells
                 if c["ours"] is None or not math.isfinite(float(c["ours"]))]
        assert not empty, f"{table}: cells without a number: {empty}"
    return results


@contextmanager
def model_cache(folder: pathlib.Path):
    """``$ROBUSTKIT_CACHE`` pointed at ``folder`` for a module's runs (tiny models stay out of the user's
    cache)."""
    before = os.environ.get("ROBUSTKIT_CACHE")
    os.environ["ROBUSTKIT_CACHE"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("ROBUSTKIT_CACHE", None)
        else:
            os.environ["ROBUSTKIT_CACHE"] = before
