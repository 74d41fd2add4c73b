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


def run_tiny(name: str, tmp_path: pathlib.Path, limit: dict):
    """Runs paper ``name`` end to end at the ``limit`` setting into ``tmp_path`` (models cached there too),
    checks every cell is filled, and returns ``(out, {(table, row, column): cell})``."""
    from robustkit.reproduce import PAPERS, run_paper
    with model_cache(tmp_path / "cache"):
        out = run_paper(name, out=tmp_path / "run", progress=False, limit=limit)
    cells = assert_every_cell_filled(out, PAPERS[name])["cells"]
    return out, {(c["table"], c["row"], c["column"]): c for c in cells}


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
