"""Reports of a finished run, built only from ``DIR/results.json`` (and the example images in
``DIR/examples.pt``): ``DIR/results.csv``, PNG plots under ``DIR/plots/`` and a self-contained
``DIR/report.html`` (the plots are embedded, so the file can be mailed on its own; the page is laid out in
:mod:`robustkit.eval.report_html`).

Every number in the HTML tables is rendered from ``results.json``; each cell carries the exact value in a
``data-value`` attribute so that the report can be checked against the JSON mechanically.
"""
from __future__ import annotations

import csv
import pathlib
from typing import Dict, List, Optional

import torch

from robustkit.eval.storage import read_json, write_atomic
from robustkit.eval.summary import FIXED_BUDGET, MINIMAL_NORM, attack_kind, budget_groups

#: Columns results.csv adds after the metrics (so that readers of the older columns keep working): what each
#: attack was run with, from its description in results.json.
SETTING_COLUMNS = ("attack_type", "norm", "eps", "steps", "restarts", "eot")

NORM_NAMES = {"linf": "L-inf", "l2": "L2", "l1": "L1", "l0": "L0"}


def fmt(value) -> str:
    """How the report prints a number: 4 decimals (1 from 10 on, 4 significant digits below 0.001), "-" for a
    missing value."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"


def norm_name(norm) -> str:
    return NORM_NAMES.get(norm, str(norm))


def attack_settings(meta: dict) -> Dict[str, object]:
    """The :data:`SETTING_COLUMNS` of one attack description (None where the attack has no such setting)."""
    params = meta.get("params") or {}
    return {"attack_type": attack_kind(meta), "norm": meta.get("norm"), "eps": meta.get("eps"),
            "steps": params.get("steps"), "restarts": params.get("restarts"), "eot": params.get("eot")}


def summary_rows(results: dict) -> List[Dict[str, object]]:
    """One row per attack: name, the summary metrics and img/s (what the CLI prints), then the
    :data:`SETTING_COLUMNS` (what the attack was run with)."""
    rows = []
    for name, entry in results["attacks"].items():
        row: Dict[str, object] = {"attack": name}
        row.update(entry["metrics"])
        row["images_per_second"] = entry["timing"]["images_per_second"]
        row.update(attack_settings(entry.get("attack") or {}))
        rows.append(row)
    return rows


def write_csv(results: dict, path: pathlib.Path) -> None:
    """results.csv: ``attack``, every metric, ``images_per_second``, then :data:`SETTING_COLUMNS` last."""
    rows = summary_rows(results)
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k not in SETTING_COLUMNS]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns + list(SETTING_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def headline_text(results: dict) -> List[str]:
    """The report's headline as plain lines (the CLI prints them under its table): the worst-case robust
    accuracy over the fixed-budget attacks at the headline budget, then one line per minimal-norm attack."""
    lines = []
    worst = results.get("worst_case")
    if worst and "by_budget" in worst:
        lines.append(f"worst-case robust accuracy {fmt(worst['robust_accuracy'])} at {norm_name(worst['norm'])} "
                     f"eps = {fmt(worst['eps'])} (an image counts when it survives every fixed-budget attack at "
                     f"that eps: {', '.join(worst['attacks'])}; strongest single attack {worst['strongest']})")
    elif budget_groups({n: e["attack"] for n, e in results["attacks"].items()}):
        lines.append("this results.json predates the per-budget worst case: rerun the evaluation to get it")
    else:
        lines.append("no fixed-budget attack: robust accuracy is not reported (see the minimal-norm attacks)")
    for name, entry in results["attacks"].items():
        if attack_kind(entry["attack"]) == MINIMAL_NORM:
            m, norm = entry["metrics"], entry["attack"].get("minimal_norm") or entry["attack"].get("norm")
            key = "linf" if norm == "linf" else "l2"
            lines.append(f"{name} (minimal-norm, {norm_name(norm)}): median {norm_name(norm)} "
                         f"{fmt(m.get(key + '_median'))}, mean {fmt(m.get(key + '_mean'))}, success rate "
                         f"{fmt(m.get('attack_success_rate'))}")
    return lines


def write_report(out_dir) -> pathlib.Path:
    """Writes ``results.csv``, ``plots/*.png`` and ``report.html`` for the run in ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    results = _read_results(out_dir / "results.json")
    write_atomic(out_dir / "results.csv", lambda tmp: write_csv(results, tmp))
    from robustkit.eval import plots   # matplotlib is an optional dependency, imported only here
    from robustkit.eval.report_html import render

    examples = _read_examples(out_dir / "examples.pt")
    figures = plots.all_figures(results, examples)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for stale in plot_dir.glob("*.png"):          # pages of an earlier report that this one does not have
        stale.unlink()
    for name, png in _pngs(figures).items():
        write_atomic(plot_dir / f"{name}.png", lambda tmp: tmp.write_bytes(png))
    path = out_dir / "report.html"
    write_atomic(path, lambda tmp: tmp.write_text(render(results, figures, has_examples=examples is not None),
                                                  encoding="utf-8"))
    return path


def _pngs(figures: Dict[str, object]) -> Dict[str, bytes]:
    out: Dict[str, bytes] = {}
    for name, figure in figures.items():
        if isinstance(figure, bytes):
            out[name] = figure
        elif figure is not None:
            out.update(zip(figure.page_names(), (png for _, png in figure.pages)))
    return out


def _read_results(path: pathlib.Path) -> dict:
    results = read_json(path, "report", "rerun the evaluation with resume to rewrite it")
    if not isinstance(results, dict) or not isinstance(results.get("attacks"), dict):
        raise ValueError(f"report: {path} is not a results file (no attacks); rerun the evaluation with resume")
    return results


def _read_examples(path: pathlib.Path) -> Optional[dict]:
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # noqa: BLE001  (unpickling errors have many types; all mean "not ours")
        raise ValueError(f"report: {path} is not a loadable examples file ({type(error).__name__}); delete it "
                         "and rerun the evaluation with resume to regenerate it") from None


__all__ = ["write_report", "write_csv", "summary_rows", "headline_text", "attack_settings", "fmt", "norm_name",
           "SETTING_COLUMNS", "FIXED_BUDGET", "MINIMAL_NORM"]
