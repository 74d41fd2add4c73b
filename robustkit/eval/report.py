"""Reports of a finished run, built only from ``DIR/results.json`` (and the example images in
``DIR/examples.pt``): ``DIR/results.csv``, PNG plots under ``DIR/plots/`` and a self-contained
``DIR/report.html`` (the plots are embedded, so the file can be mailed on its own).

Every number in the HTML tables is rendered from ``results.json``; each cell carries the exact value in a
``data-value`` attribute so that the report can be checked against the JSON mechanically.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import pathlib
from typing import Dict, List, Sequence

import torch

from robustkit.eval.storage import read_json, write_atomic

#: (metric key, column title) of the summary table, in order.
SUMMARY_COLUMNS = (("clean_accuracy", "clean acc"), ("robust_accuracy", "robust acc"),
                   ("attack_success_rate", "success"), ("fooling_ratio", "fooling"), ("l2_median", "median L2"),
                   ("linf_median", "median L-inf"), ("rho2", "rho2"), ("eps_ref", "eps_ref"))


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


def summary_rows(results: dict) -> List[Dict[str, object]]:
    """One row per attack: name, the summary metrics and img/s (what the CLI prints and the CSV holds)."""
    rows = []
    for name, entry in results["attacks"].items():
        row: Dict[str, object] = {"attack": name}
        row.update(entry["metrics"])
        row["images_per_second"] = entry["timing"]["images_per_second"]
        rows.append(row)
    return rows


def write_csv(results: dict, path: pathlib.Path) -> None:
    rows = summary_rows(results)
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_report(out_dir) -> pathlib.Path:
    """Writes ``results.csv``, ``plots/*.png`` and ``report.html`` for the run in ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    results = _read_results(out_dir / "results.json")
    write_atomic(out_dir / "results.csv", lambda tmp: write_csv(results, tmp))
    from robustkit.eval import plots   # matplotlib is an optional dependency, imported only here

    figures = plots.all_figures(results, _read_examples(out_dir / "examples.pt"))
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for name, png in figures.items():
        write_atomic(plot_dir / f"{name}.png", lambda tmp: tmp.write_bytes(png))
    path = out_dir / "report.html"
    write_atomic(path, lambda tmp: tmp.write_text(_html(results, figures)))
    return path


def _read_results(path: pathlib.Path) -> dict:
    results = read_json(path, "report", "rerun the evaluation with resume to rewrite it")
    if not isinstance(results, dict) or not isinstance(results.get("attacks"), dict):
        raise ValueError(f"report: {path} is not a results file (no attacks); rerun the evaluation with resume")
    return results


def _read_examples(path: pathlib.Path):
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # noqa: BLE001  (unpickling errors have many types; all mean "not ours")
        raise ValueError(f"report: {path} is not a loadable examples file ({type(error).__name__}); delete it "
                         "and rerun the evaluation with resume to regenerate it") from None


# ---- HTML ---------------------------------------------------------------------------------------------

def _cell(value, key: str, tag: str = "td") -> str:
    raw = "" if value is None else (value if isinstance(value, str) else repr(value))
    return (f'<{tag} data-key="{html.escape(key)}" data-value="{html.escape(str(raw))}">'
            f'{html.escape(fmt(value))}</{tag}>')


def _table(headers: Sequence[str], rows: List[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _summary_table(results: dict) -> str:
    rows = []
    for row in summary_rows(results):
        name = str(row["attack"])
        cells = [f"<td>{html.escape(name)}</td>"]
        cells += [_cell(row.get(key), f"attacks/{name}/metrics/{key}") for key, _ in SUMMARY_COLUMNS]
        cells.append(_cell(row["images_per_second"], f"attacks/{name}/timing/images_per_second"))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return _table(["attack"] + [title for _, title in SUMMARY_COLUMNS] + ["img/s"], rows)


def _class_table(per_class: dict, prefix: str) -> str:
    rows = []
    for which in ("top", "bottom"):
        for i, (cls, acc) in enumerate(per_class[which]):
            rows.append(f"<tr><td>{which}</td>{_cell(cls, f'{prefix}/{which}/{i}/0')}"
                        f"{_cell(acc, f'{prefix}/{which}/{i}/1')}</tr>")
    return _table(["", "class", "accuracy"], rows)


def _transfer_table(transfer: dict) -> str:
    rows = []
    for i, source in enumerate(transfer["sources"]):
        cells = "".join(_cell(v, f"transfer/matrix/{i}/{j}") for j, v in enumerate(transfer["matrix"][i]))
        rows.append(f"<tr><td>{html.escape(source)}</td>{cells}</tr>")
    return _table(["source \\ target"] + transfer["targets"], rows)


def _img(figures: Dict[str, bytes], name: str, caption: str) -> str:
    if name not in figures:
        return ""
    data = base64.b64encode(figures[name]).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{caption}</figcaption></figure>'


def _html(results: dict, figures: Dict[str, bytes]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>robustkit evaluation</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}img{max-width:100%}</style></head><body>",
             "<h1>robustkit evaluation</h1>",
             f"<p>{results['n']} images; clean accuracy "
             f"{_cell(results['clean']['accuracy'], 'clean/accuracy', 'span')}"
             "</p>"]
    if "worst_case" in results:
        worst = results["worst_case"]["robust_accuracy"]
        parts.append("<p>worst case over all attacks: robust accuracy "
                     f"{_cell(worst, 'worst_case/robust_accuracy', 'span')}"
                     "</p>")
    if results.get("warnings"):
        parts += ["<h2>Warnings</h2><ul>"] + [f"<li><b>{html.escape(w['code'])}</b>: {html.escape(w['message'])}</li>"
                                             for w in results["warnings"]] + ["</ul>"]
    parts += ["<h2>Attacks</h2>", _summary_table(results)]
    parts.append(_img(figures, "accuracy_vs_eps", "Accuracy vs perturbation budget"))
    if "transfer" in results:
        parts += ["<h2>Transfer (success rate, rows: source, columns: target)</h2>",
                  _transfer_table(results["transfer"]), _img(figures, "transfer", "Transfer matrix")]
    if "per_class" in results["clean"]:
        parts += ["<h2>Per-class accuracy (clean)</h2>",
                  _class_table(results["clean"]["per_class"], "clean/per_class")]
    for name, entry in results["attacks"].items():
        if "per_class" in entry:
            parts += [f"<h3>Per-class robust accuracy under {html.escape(name)}</h3>",
                      _class_table(entry["per_class"], f"attacks/{name}/per_class")]
    parts.append(_img(figures, "confusion", "Clean (rows) vs adversarial (columns) predictions"))
    parts.append(_img(figures, "examples", "Clean, adversarial and amplified perturbation (first images)"))
    parts.append(_img(figures, "gradcam", "Grad-CAM on clean and adversarial images"))
    meta = {k: results[k] for k in ("settings", "software", "device") if k in results}
    parts += ["<h2>Settings</h2><pre>", html.escape(json.dumps(meta, indent=1)), "</pre></body></html>"]
    return "\n".join(parts)


__all__ = ["write_report", "write_csv", "summary_rows", "fmt", "SUMMARY_COLUMNS"]
