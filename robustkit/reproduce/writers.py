"""The three files a reproduction leaves in its run directory.

- ``tables.md``: per table one row per cell (paper | ours | difference) and its notes, then the figures'
  points. It depends on the measurements only (no time, no command line), so a resumed run writes the same
  file as an uninterrupted one.
- ``results.json``: the cells, notes, series, heat maps and bar charts, plus the exact command, scale, seed, settings,
  software versions, machine and wall time.
- ``report.html``: the tables and every figure as inline SVG (matplotlib), readable offline.
"""
from __future__ import annotations

import dataclasses
import html
import io
import math
import platform
from typing import Dict, List, Optional

from robustkit.eval.describe import device_description, software_versions
from robustkit.eval.storage import write_atomic, write_json
from robustkit.reproduce.protocol import Bars, Cell, Context, Heatmap, Series

TABLES_FILE, RESULTS_FILE, REPORT_FILE = "tables.md", "results.json", "report.html"


def fmt_value(value: Optional[float], fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def fmt_difference(cell: Cell) -> str:
    difference = cell.difference
    return "—" if difference is None or math.isnan(difference) else format(difference, "+" + cell.fmt)


def _figures(ctx: Context) -> List[str]:
    """Figure names in the paper's order first, then any others in the order they were recorded."""
    names = ([s.figure for s in ctx.series_list] + [h.figure for h in ctx.heatmaps]
             + [b.figure for b in ctx.bar_charts])
    ordered = [t for t in ctx.paper.tables if t in names]
    return ordered + [n for n in dict.fromkeys(names) if n not in ordered]


def _md_series(series: List[Series]) -> List[str]:
    xs = sorted({x for s in series for x in s.x})
    lines = [f"| {series[0].xlabel} | " + " | ".join(f"{s.name} ({s.ylabel})" for s in series) + " |",
             "|---" * (len(series) + 1) + "|"]
    for x in xs:
        values = [next((fmt_value(y, ".3f") for sx, y in zip(s.x, s.y) if sx == x), "—") for s in series]
        lines.append(f"| {x:g} | " + " | ".join(values) + " |")
    return lines


def _md_heatmap(h: Heatmap) -> List[str]:
    lines = [f"{h.label}", "", "| | " + " | ".join(h.cols) + " |", "|---" * (len(h.cols) + 1) + "|"]
    lines += [f"| {r} | " + " | ".join(fmt_value(v, ".3f") for v in row) + " |" for r, row in zip(h.rows, h.values)]
    return lines


def _md_bars(b: Bars) -> List[str]:
    names = list(b.groups)
    lines = [f"{b.ylabel}", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(fmt_value(b.groups[n][i], ".3f") for n in names) + " |"
              for i, label in enumerate(b.labels)]
    return lines


def tables_markdown(ctx: Context) -> str:
    lines = [f"# {ctx.paper.title}", "",
             f"`robustkit reproduce {ctx.paper.name}`: scale {ctx.scale}, seed {ctx.seed}"
             + (f", limit {ctx.limit}" if ctx.limit else "") + ".", ""]
    if ctx.settings:
        lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in ctx.settings.items()) + ".", ""]
    for table, description in ctx.paper.tables.items():
        cells = [c for c in ctx.cells if c.table == table]
        notes = ctx.notes.get(table, [])
        if not cells and not notes:
            continue
        lines += [f"## {table}: {description}", ""]
        if cells:
            # a note column only where a cell has one (Markdown drops cells beyond the header's)
            noted = any(c.note for c in cells)
            lines += ["| row | column | paper | ours | difference |" + (" note |" if noted else ""),
                      "|---|---|---|---|---|" + ("---|" if noted else "")]
            lines += [f"| {c.row} | {c.column} | {fmt_value(c.paper, c.fmt)} | {fmt_value(c.ours, c.fmt)} | "
                      f"{fmt_difference(c)} |" + (f" {c.note} |" if noted else "") for c in cells]
            lines.append("")
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    for figure in _figures(ctx):
        series = [s for s in ctx.series_list if s.figure == figure]
        lines += [f"### {figure} (plotted in report.html)", ""]
        if series:
            lines += _md_series(series) + [""]
        for h in (h for h in ctx.heatmaps if h.figure == figure):
            lines += _md_heatmap(h) + [""]
        for b in (b for b in ctx.bar_charts if b.figure == figure):
            lines += _md_bars(b) + [""]
    other_notes = [t for t in ctx.notes if t not in ctx.paper.tables]
    for table in other_notes:
        lines += [f"- {table}: {n}" for n in ctx.notes[table]]
    return "\n".join(lines).rstrip() + "\n"


def results_object(ctx: Context, *, command: str, wall_seconds: float, started: str) -> dict:
    return {"paper": ctx.paper.name, "title": ctx.paper.title, "tables": ctx.paper.tables,
            "command": command, "scale": ctx.scale, "seed": ctx.seed, "limit": ctx.limit,
            "settings": ctx.settings, "resumed": ctx.resume,
            "data_dir": None if ctx.data_dir is None else str(ctx.data_dir),
            "versions": software_versions(),
            "machine": {**device_description(ctx.device, 1), "hostname": platform.node()},
            "started": started, "wall_seconds": wall_seconds, "steps_computed": ctx.steps_run,
            "cells": [{**dataclasses.asdict(c), "difference": c.difference} for c in ctx.cells],
            "notes": ctx.notes, "series": [dataclasses.asdict(s) for s in ctx.series_list],
            "heatmaps": [dataclasses.asdict(h) for h in ctx.heatmaps],
            "bars": [dataclasses.asdict(b) for b in ctx.bar_charts]}


def _svg(fig) -> str:
    import matplotlib.pyplot as plt
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]     # drop the XML prolog: the SVG sits inside the HTML


def figure_svgs(ctx: Context) -> Dict[str, List[str]]:
    """figure name -> inline SVGs (one line chart of its series, one picture per heat map)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out: Dict[str, List[str]] = {}
    for figure in _figures(ctx):
        series = [s for s in ctx.series_list if s.figure == figure]
        if series:
            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            for s in series:
                ax.plot(s.x, s.y, marker="o", label=s.name)
            ax.set_xlabel(series[0].xlabel)
            ax.set_ylabel(series[0].ylabel)
            ax.set_title(figure)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            out.setdefault(figure, []).append(_svg(fig))
        for h in (h for h in ctx.heatmaps if h.figure == figure):
            fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(h.cols), 1.0 + 0.5 * len(h.rows)))
            image = ax.imshow(h.values, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(h.cols)), h.cols, rotation=30, ha="right", fontsize=8)
            ax.set_yticks(range(len(h.rows)), h.rows, fontsize=8)
            for i, row in enumerate(h.values):
                for j, v in enumerate(row):
                    ax.text(j, i, fmt_value(v, ".2f"), ha="center", va="center", color="w", fontsize=7)
            fig.colorbar(image, ax=ax, label=h.label)
            ax.set_title(figure)
            out.setdefault(figure, []).append(_svg(fig))
        for b in (b for b in ctx.bar_charts if b.figure == figure):
            out.setdefault(figure, []).append(_svg(_bar_chart(plt, figure, b)))
    return out


def _bar_chart(plt, figure: str, b: Bars):
    """Grouped bars: one cluster per label, one bar per group (NaN draws nothing)."""
    width = 0.8 / len(b.groups)
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(b.labels), 3.6))
    for k, (name, values) in enumerate(b.groups.items()):
        ax.bar([i + (k - (len(b.groups) - 1) / 2) * width for i in range(len(b.labels))], values, width,
               label=name)
    ax.set_xticks(range(len(b.labels)), b.labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(b.ylabel)
    ax.set_title(figure)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def report_html(ctx: Context, results: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(ctx.paper.title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,td:nth-child(2)"
             "{text-align:left}.bad{color:#b00}</style></head><body>",
             f"<h1>{e(ctx.paper.title)}</h1>",
             f"<p><code>{e(results['command'])}</code><br>scale {e(ctx.scale)}, seed {ctx.seed}, "
             f"{results['wall_seconds']:.0f} s on {e(str(results['machine'].get('name')))}; robustkit "
             f"{e(results['versions']['robustkit'])}, torch {e(results['versions']['torch'])}</p>"]
    svgs = figure_svgs(ctx)
    for table, description in ctx.paper.tables.items():
        cells = [c for c in ctx.cells if c.table == table]
        if not cells and not ctx.notes.get(table) and table not in svgs:
            continue
        parts.append(f"<h2>{e(table)}</h2><p>{e(description)}</p>")
        if cells:
            parts.append("<table><tr><th>row</th><th>column</th><th>paper</th><th>ours</th><th>difference</th></tr>")
            for c in cells:
                parts.append(f"<tr><td>{e(c.row)}</td><td>{e(c.column)}</td><td>{fmt_value(c.paper, c.fmt)}</td>"
                             f"<td{' class=bad' if c.ours is None else ''}>{fmt_value(c.ours, c.fmt)}</td>"
                             f"<td>{fmt_difference(c)}</td></tr>")
            parts.append("</table>")
        parts += [f"<p>{e(n)}</p>" for n in ctx.notes.get(table, [])]
        parts += svgs.pop(table, [])
    for figure, pictures in svgs.items():
        parts.append(f"<h2>{e(figure)}</h2>")
        parts += pictures
    parts.append("</body></html>")
    return "\n".join(parts)


def write_all(ctx: Context, *, command: str, wall_seconds: float, started: str) -> str:
    """Writes tables.md, results.json and report.html into ``ctx.out``; returns the tables' markdown."""
    markdown = tables_markdown(ctx)
    results = results_object(ctx, command=command, wall_seconds=wall_seconds, started=started)
    write_atomic(ctx.out / TABLES_FILE, lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    write_json(ctx.out / RESULTS_FILE, results)
    page = report_html(ctx, results)
    write_atomic(ctx.out / REPORT_FILE, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return markdown


__all__ = ["write_all", "tables_markdown", "results_object", "report_html", "TABLES_FILE", "RESULTS_FILE",
           "REPORT_FILE"]
