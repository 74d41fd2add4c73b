"""The HTML page of a run's report (:func:`render`), from ``results.json`` and the figures of
:mod:`robustkit.eval.plots`.

Layout: a navigation bar linking every section; the model-check warnings, if any, first; the headline (the
worst-case robust accuracy over the fixed-budget attacks at one budget, and a line per minimal-norm attack);
one table per attack kind; accuracy vs eps; transfer; per-class accuracy (collapsed); the per-attack figures,
each naming any attack it does not show; and the settings as tables.

Every number is a cell ``<td|span data-key="path/in/results" data-value="repr(value)">fmt(value)</...>``, so
the page can be checked against results.json mechanically (``tests/test_cli.py`` does).
"""
from __future__ import annotations

import base64
import html
import json
from typing import Dict, List, Sequence, Tuple

from robustkit.eval.report import fmt, norm_name
from robustkit.eval.summary import (FIXED_BUDGET, MINIMAL_NORM, attack_kind, budget_groups,
                                    transfer_only_to_itself)

#: (metric key, column title) of the fixed-budget attacks' table, after attack / norm / eps / steps.
FIXED_COLUMNS = (("clean_accuracy", "clean acc"), ("robust_accuracy", "robust acc"),
                 ("attack_success_rate", "success"), ("fooling_ratio", "fooling"), ("l2_median", "median L2"),
                 ("linf_median", "median L-inf"), ("rho2", "rho2"))
#: the minimal-norm attacks' table, after attack / norm / steps: no robust accuracy (they search until success)
MINIMAL_COLUMNS = (("attack_success_rate", "success"), ("l2_median", "median L2"), ("l2_mean", "mean L2"),
                   ("linf_median", "median L-inf"), ("linf_mean", "mean L-inf"), ("rho2", "rho2"),
                   ("eps_ref", "eps_ref"), ("accuracy_at_0.5_eps_ref", "acc @ 0.5 eps_ref"))
OTHER_COLUMNS = FIXED_COLUMNS + (("eps_ref", "eps_ref"),)
#: options every attack has that say how it runs, not what it computes (left out of the settings table)
RUNTIME_OPTIONS = ("amp", "batch_size", "streams", "conv_input_grad", "attack_mode", "ensemble_weights", "eps",
                   "norm", "steps", "step_size", "restarts", "eot", "random_start")
MAX_CLASS_ROWS = 50

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:0 auto 3em;
 padding:0 1em;color:#222;line-height:1.4;font-size:15px}
h1{font-size:1.6em;margin:.6em 0 .1em}h2{font-size:1.25em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:.4em 0;z-index:1;font-size:.9em}
nav a{margin-right:1.1em;color:#1a56a0;text-decoration:none}nav a:hover{text-decoration:underline}
.sub{color:#555;margin:0 0 .6em}
.headline{background:#f3f7fc;border:1px solid #c5d6ea;border-radius:6px;padding:.6em 1em}
.headline .big{font-size:1.35em;margin:.2em 0}.headline .big span{font-weight:700}
.warnings{background:#fff4e5;border:2px solid #e08a00;border-radius:6px;padding:.3em 1em;margin-top:1em}
.warnings h2{border:0;margin:.3em 0;color:#8a4b00}
.ok{color:#2b6e2b}.note{color:#8a4b00;font-size:.92em}.caption{color:#555;font-size:.92em;margin:.2em 0}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
td,th{border:1px solid #ccc;padding:2px 7px;text-align:right;white-space:nowrap}
th{background:#f2f2f2}td.name,th.name{text-align:left}tr:nth-child(even) td{background:#fafafa}
td.wrap{white-space:normal;text-align:left;font-size:.9em;max-width:420px}
img{max-width:100%;display:block}figure{margin:.4em 0 1em}figcaption{color:#555;font-size:.9em}
.side{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}
td.wrap.params{max-width:520px;font-size:.85em}
details{margin:.4em 0}summary{cursor:pointer;color:#1a56a0}pre{font-size:.8em;overflow-x:auto}
"""


# ---- cells and tables ----------------------------------------------------------------------------------

def _lookup(results: dict, key: str):
    value = results
    for part in key.split("/"):
        if isinstance(value, list):
            value = value[int(part)] if int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            value = None
        if value is None:
            return None
    return value


def _cell(results: dict, key: str, tag: str = "td") -> str:
    """A number (or short string) cell: the value at ``key`` in results, shown with :func:`fmt`."""
    value = _lookup(results, key)
    raw = "" if value is None else (value if isinstance(value, str) else repr(value))
    return (f'<{tag} data-key="{html.escape(key)}" data-value="{html.escape(str(raw))}">'
            f'{html.escape(fmt(value))}</{tag}>')


def _name(text: str) -> str:
    return f'<td class="name">{html.escape(str(text))}</td>'


def _table(headers: Sequence[str], rows: List[str], left: Sequence[int] = (0,)) -> str:
    """A table; the header cells at the indices ``left`` are left-aligned, like their (text) columns."""
    head = "".join(f'<th{" class=name" if i in left else ""}>{html.escape(h)}</th>' for i, h in enumerate(headers))
    return f"<table><tr>{head}</tr>{''.join(f'<tr>{r}</tr>' for r in rows)}</table>"


def _esc_list(names: Sequence[str]) -> str:
    return ", ".join(html.escape(n) for n in names)


def _kinds(results: dict) -> Dict[str, List[str]]:
    kinds: Dict[str, List[str]] = {FIXED_BUDGET: [], MINIMAL_NORM: [], "other": []}
    for name, entry in results["attacks"].items():
        kinds[attack_kind(entry["attack"])].append(name)
    return kinds


# ---- sections ------------------------------------------------------------------------------------------

def _title(results: dict) -> str:
    settings = results.get("settings") or {}
    model = settings.get("model") or {}
    data = settings.get("data") or {}
    name = results.get("model_name")
    what = html.escape(str(model.get("class", "model")))
    if name and name != model.get("class"):
        what += f" ({html.escape(str(name))})"
    total = f" of {_cell(results, 'settings/data/size', 'span')}" if data.get("size") is not None else ""
    kind = f" ({html.escape(str(data['type']))})" if data.get("type") else ""
    device = results.get("device") or {}
    software = results.get("software") or {}
    sub = [f"{_cell(results, 'n', 'span')}{total} images{kind}", f"seed {_cell(results, 'settings/seed', 'span')}"]
    if device:
        sub.append(f"{_cell(results, 'device/device', 'span')} ({_cell(results, 'device/name', 'span')})")
    if software:
        sub.append(f"robustkit {_cell(results, 'software/robustkit', 'span')}, "
                   f"torch {_cell(results, 'software/torch', 'span')}")
    return f"<h1>Robustness of {what}</h1><p class=sub>{' · '.join(sub)}</p>"


def _warnings(results: dict) -> str:
    found = results.get("warnings")
    if not found:
        return ""
    items = "".join(f"<li><b>{html.escape(w.get('code', '?'))}</b>: {html.escape(w.get('message', ''))}</li>"
                    for w in found)
    return (f'<section id="checks" class="warnings"><h2>Model checks: {len(found)} warning'
            f'{"s" if len(found) != 1 else ""}</h2><p>check_model found these on the first images before the '
            f"run. Each can make the robust accuracy below look better than it is: read them first.</p>"
            f"<ul>{items}</ul></section>")


def _checks_line(results: dict) -> str:
    if "warnings" not in results:
        return '<p class="note">check_model was not run (checks="off"): nothing guards against a model in ' \
               "training mode, softmax outputs or masked gradients.</p>"
    if not results["warnings"]:
        return '<p class="ok">check_model: no findings (mode, outputs, randomness, gradients).</p>'
    return f'<p class="note">check_model: {len(results["warnings"])} warning(s), listed above.</p>'


def _headline(results: dict) -> str:
    kinds = _kinds(results)
    parts = ['<section id="summary"><h2>Headline</h2><div class="headline">']
    worst = results.get("worst_case") or {}
    clean = (f"Clean accuracy {_cell(results, 'clean/accuracy', 'span')} on {_cell(results, 'n', 'span')} "
             "images.")
    if "by_budget" in worst:
        n_attacks = len(worst["attacks"])
        parts.append(f'<p class="big">Robust accuracy {_cell(results, "worst_case/robust_accuracy", "span")} at '
                     f'{html.escape(norm_name(worst["norm"]))} ε = {_cell(results, "worst_case/eps", "span")}</p>')
        over = (f"Worst case per image over the {n_attacks} fixed-budget attacks at this budget "
                f"({_esc_list(worst['attacks'])}): an image counts as robust only when it is classified correctly "
                "clean and under each of them" if n_attacks > 1 else
                f"Under {html.escape(worst['attacks'][0])}, the only fixed-budget attack at this budget")
        strongest = worst["strongest"]
        parts.append(f"<p>{over}. Strongest single attack: {_cell(results, 'worst_case/strongest', 'span')} "
                     f"({_cell(results, f'attacks/{strongest}/metrics/robust_accuracy', 'span')}). {clean}</p>")
        if len(worst["by_budget"]) > 1:
            rows = []
            for i, group in enumerate(worst["by_budget"]):
                rows.append(f"<td class=name>{html.escape(norm_name(group['norm']))}</td>"
                            + _cell(results, f"worst_case/by_budget/{i}/eps")
                            + _cell(results, f"worst_case/by_budget/{i}/robust_accuracy")
                            + _cell(results, f"worst_case/by_budget/{i}/strongest")
                            + f'<td class="wrap">{_esc_list(group["attacks"])}</td>')
            parts.append("<p>Every budget of the run (worst case per image over the attacks at that budget):</p>"
                         + _table(["norm", "ε", "worst-case robust acc", "strongest", "attacks"], rows, left=(0, 4)))
    elif kinds[FIXED_BUDGET]:
        parts.append(_legacy_headline(results) + f"<p>{clean}</p>")
    else:
        parts.append(f"<p class=big>No fixed-budget attack in this run: robust accuracy is not reported.</p>"
                     f"<p>{clean}</p>")
    if kinds[MINIMAL_NORM]:
        items = []
        for name in kinds[MINIMAL_NORM]:
            meta = results["attacks"][name]["attack"]
            norm = meta.get("minimal_norm") or meta.get("norm")
            key = "linf" if norm == "linf" else "l2"
            shown = norm_name(norm)
            base = f"attacks/{name}/metrics"
            items.append(f"<li><b>{html.escape(name)}</b> ({html.escape(shown)}): median {shown} "
                         f"{_cell(results, f'{base}/{key}_median', 'span')}, mean "
                         f"{_cell(results, f'{base}/{key}_mean', 'span')}, success rate "
                         f"{_cell(results, f'{base}/attack_success_rate', 'span')}</li>")
        parts.append("<p>Minimal-norm attacks search for the smallest perturbation that succeeds, so their "
                     "success rate is no robustness measure; the size of the perturbation they need is (norms "
                     "over the correctly classified images they fooled):</p><ul>" + "".join(items) + "</ul>")
    parts.append(_checks_line(results) + "</div></section>")
    return "".join(parts)


def _legacy_headline(results: dict) -> str:
    """A results.json written before the per-budget worst case: the strongest single attack per budget (an
    upper bound on the worst case, which needs the per-image records)."""
    groups = budget_groups({n: e["attack"] for n, e in results["attacks"].items()})
    rows = []
    for group in groups:
        best = min(group["attacks"], key=lambda a: _sortable(results["attacks"][a]["metrics"]["robust_accuracy"]))
        rows.append(f"<td class=name>{html.escape(norm_name(group['norm']))}</td>"
                    + _cell(results, f"attacks/{best}/attack/eps") + _name(best)
                    + _cell(results, f"attacks/{best}/metrics/robust_accuracy"))
    return ("<p class=note>This results.json predates the per-budget worst case; rerun the evaluation to get "
            "it. Lowest robust accuracy of a single fixed-budget attack per budget (an upper bound on the worst "
            "case):</p>" + _table(["norm", "ε", "attack", "robust acc"], rows))


def _sortable(value) -> float:
    return float("inf") if value is None else value


def _attack_tables(results: dict) -> str:
    kinds = _kinds(results)
    parts = ['<section id="attacks"><h2>Attacks</h2>']

    def rows(names, columns, settings):
        out = []
        for name in names:
            cells = [_name(name)] + [_cell(results, f"attacks/{name}/attack/{k}") for k in settings]
            cells += [_cell(results, f"attacks/{name}/attack/params/steps")]
            cells += [_cell(results, f"attacks/{name}/metrics/{k}") for k, _ in columns]
            cells.append(_cell(results, f"attacks/{name}/timing/images_per_second"))
            out.append("".join(cells))
        return out

    if kinds[FIXED_BUDGET]:
        parts.append("<p class=caption>Fixed-budget attacks: the search stays inside the ε-ball; robust accuracy "
                     "counts images classified correctly clean and under the attack.</p>")
        parts.append(_table(["attack", "norm", "ε", "steps"] + [t for _, t in FIXED_COLUMNS] + ["img/s"],
                            rows(kinds[FIXED_BUDGET], FIXED_COLUMNS, ("norm", "eps"))))
    if kinds[MINIMAL_NORM]:
        parts.append("<p class=caption>Minimal-norm attacks: perturbation norms over the clean-correct images they "
                     "fooled; eps_ref is the budget at which half of the images are misclassified.</p>")
        parts.append(_table(["attack", "norm", "steps"] + [t for _, t in MINIMAL_COLUMNS] + ["img/s"],
                            rows(kinds[MINIMAL_NORM], MINIMAL_COLUMNS, ("norm",))))
    if kinds["other"]:
        parts.append("<p class=caption>Other attacks (neither a FixedBudgetAttack nor a MinimalNormAttack).</p>")
        parts.append(_table(["attack", "norm", "ε", "steps"] + [t for _, t in OTHER_COLUMNS] + ["img/s"],
                            rows(kinds["other"], OTHER_COLUMNS, ("norm", "eps"))))
    parts.append("<p class=caption>All metrics of every attack are in results.csv and results.json.</p></section>")
    return "".join(parts)


def _figure(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode()
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">{cap}</figure>'


def _curves(results: dict, figures: dict) -> str:
    if figures.get("accuracy_vs_eps") is None:
        return ""
    return ('<section id="accuracy-vs-eps"><h2>Accuracy vs ε</h2><p class=caption>A minimal-norm run gives '
            "the whole curve in its norm (the accuracy at budget ε is the fraction of images it needs more than ε "
            "to fool); a fixed-budget attack run at several ε gives one point per run.</p>"
            + _figure(figures["accuracy_vs_eps"], "accuracy vs eps") + "</section>")


def _transfer(results: dict, figures: dict) -> str:
    transfer = results.get("transfer")
    if not transfer:
        return ""
    parts = ['<section id="transfer"><h2>Transfer</h2>']
    targets = transfer["targets"]
    if transfer_only_to_itself(results):
        parts.append(f"<p>The adversarial images were evaluated only on the attacked model itself "
                     f"({html.escape(str(targets[0]))}), so there is no transfer to report: its success rates are "
                     "the success column above. Pass <code>transfer_to={name: model}</code> to "
                     "<code>evaluate</code>, or use <code>robustkit transfer</code>, to evaluate them on other "
                     "models.</p></section>")
        return "".join(parts)
    rows = [_name(source) + "".join(_cell(results, f"transfer/matrix/{i}/{j}") for j in range(len(targets)))
            for i, source in enumerate(transfer["sources"])]
    parts.append("<p class=caption>Success rate of each attack's adversarial images (rows) on each model "
                 "(columns), over the images that model classifies correctly; the first column is the attacked "
                 "model itself.</p>" + _table(["attack \\ target"] + list(targets), rows))
    if figures.get("transfer") is not None:
        parts.append(_figure(figures["transfer"], "transfer matrix"))
    return "".join(parts) + "</section>"


def _per_class(results: dict) -> str:
    per_class = (results.get("clean") or {}).get("per_class")
    if not per_class:
        return ""
    kinds = _kinds(results)
    columns = [n for n in kinds[FIXED_BUDGET] + kinds["other"] if "per_class" in results["attacks"][n]]
    classes = list(range(len(per_class["accuracy"])))
    note = ""
    if len(classes) > MAX_CLASS_ROWS:
        weakest = {int(c) for c, _ in per_class["bottom"]}
        for name in columns:
            weakest |= {int(c) for c, _ in results["attacks"][name]["per_class"]["bottom"]}
        note = (f"<p class=caption>{len(classes)} classes: the table lists the {len(weakest)} that are among the "
                "weakest of any column; results.json holds every class.</p>")
        classes = sorted(weakest)
    rows = [_name(c) + _cell(results, f"clean/per_class/accuracy/{c}")
            + "".join(_cell(results, f"attacks/{n}/per_class/accuracy/{c}") for n in columns) for c in classes]
    minimal = kinds[MINIMAL_NORM]
    missing = [n for n in results["attacks"] if n not in columns and n not in minimal]
    why = ""
    if minimal:
        why += (f" Not columns: {_esc_list(minimal)}: minimal-norm attacks search until they succeed, so their "
                "per-class accuracy measures their step budget, not the model.")
    if missing:
        why += f" No per-class entry in results.json: {_esc_list(missing)}."
    return ('<section id="per-class"><h2>Per-class accuracy</h2><details><summary>Accuracy per class, clean and '
            f"under each fixed-budget attack ({len(per_class['accuracy'])} classes)</summary>"
            f"<p class=caption>An attack's column: the fraction of the class's images classified correctly clean "
            f"and under that attack.{why}</p>{note}"
            + _table(["class", "clean"] + columns, rows) + "</details></section>")


FIGURE_SECTIONS = (
    ("confusion", "Confusion matrices", "Clean prediction (rows) against adversarial prediction (columns) for "
     "each attack; off-diagonal mass is where the attack moves images."),
    ("examples", "Example images", "Rows: the first images of the run (y = label). Columns: the clean image, "
     "then for each attack the adversarial image and its perturbation amplified to the full grey range "
     "(the factor above it). Above each image the predicted class, red when wrong."),
    ("gradcam", "Grad-CAM", "Grad-CAM maps (Selvaraju et al. 2017) at the last convolution, for the predicted "
     "class, on the clean image and on each attack's adversarial image."),
)


def _figure_section(results: dict, key: str, title: str, caption: str, section, has_examples: bool) -> str:
    attacks = list(results["attacks"])
    omitted: Dict[str, str] = {}
    pages: List[Tuple[List[str], bytes]] = []
    if section is None:
        why = ("the model has no nn.Conv2d layer, so Grad-CAM has no feature map" if has_examples and
               key == "gradcam" else "the run directory has no examples.pt (evaluate(examples=0))")
        omitted = {a: why for a in attacks}
    else:
        pages, omitted = section.pages, dict(section.omitted)
        shown = set(section.shown)
        for a in attacks:
            if a not in shown and a not in omitted:
                omitted[a] = "examples.pt holds no images of it (it was written before this attack was added)"
    shown_names = [a for names, _ in pages for a in names]
    attrs = (f' data-shown="{html.escape(json.dumps(shown_names))}" '
             f'data-omitted="{html.escape(json.dumps(sorted(omitted)))}"')
    parts = [f'<section id="{key}"{attrs}><h2>{html.escape(title)}</h2><p class=caption>{caption}</p>']
    names = section.page_names() if section is not None else []
    for i, ((page_attacks, png), name) in enumerate(zip(pages, names)):
        label = (f"Page {i + 1} of {len(pages)}: {_esc_list(page_attacks)}" if len(pages) > 1 else "")
        parts.append(_figure(png, name, label))
    if omitted:
        reasons: Dict[str, List[str]] = {}
        for a in attacks:
            if a in omitted:
                reasons.setdefault(omitted[a], []).append(a)
        parts += [f'<p class="note">Not shown: {_esc_list(names_)}: {html.escape(why)}.</p>'
                  for why, names_ in reasons.items()]
    return "".join(parts) + "</section>"


def _settings(results: dict) -> str:
    settings = results.get("settings") or {}

    def rows_of(entries) -> List[str]:
        return [f'{_name(label)}<td class="name">{value}</td>' for label, value in entries]

    run = [("model", _cell(results, "settings/model/class", "span")),
           ("model name", _cell(results, "model_name", "span")),
           ("parameters", _cell(results, "settings/model/parameters", "span")),
           ("weights SHA-256 (16 hex)", _cell(results, "settings/model/sha256", "span")),
           ("data", _cell(results, "settings/data/type", "span")),
           ("data set size", _cell(results, "settings/data/size", "span")),
           ("images evaluated", _cell(results, "n", "span")),
           ("limit", _cell(results, "settings/limit", "span")),
           ("only correct", _cell(results, "settings/only_correct", "span")),
           ("per class", _cell(results, "settings/per_class", "span")),
           ("target", _cell(results, "settings/target", "span")
            + (" (untargeted)" if settings.get("target") is None else "")),
           ("seed", _cell(results, "settings/seed", "span")),
           ("batch size", _cell(results, "settings/batch_size", "span"))]
    if settings.get("transfer_to"):
        run.append(("transfer targets", _esc_list(list(settings["transfer_to"]))))
    if "defense" in settings:
        run.append(("input defense", f"<code>{html.escape(json.dumps(settings['defense']))}</code>"))
    machine = [(k, _cell(results, f"device/{k}", "span")) for k in (results.get("device") or {})]
    machine += [(k, _cell(results, f"software/{k}", "span")) for k in (results.get("software") or {})]
    parts = ['<section id="settings"><h2>Settings</h2><div class="side">',
             _table(["run", ""], rows_of(run)), _table(["device and software", ""], rows_of(machine)), "</div>"]
    attack_rows = []
    for name, entry in results["attacks"].items():
        meta = entry["attack"]
        params = meta.get("params") or {}
        base = f"attacks/{name}/attack"
        cells = [_name(name), _cell(results, f"{base}/class"), f"<td>{html.escape(attack_kind(meta))}</td>"]
        cells += [_cell(results, f"{base}/{k}") for k in ("norm", "eps")]
        cells += [_cell(results, f"{base}/params/{k}") for k in ("steps", "step_size", "restarts", "eot",
                                                                  "random_start")]
        rest = [f"{html.escape(k)}={_cell(results, f'{base}/params/{k}', 'span')}" for k in params
                if k not in RUNTIME_OPTIONS and params[k] is not None]
        cells.append(f'<td class="wrap params">{", ".join(rest)}</td>')
        attack_rows.append("".join(cells))
    parts.append("<p class=caption>Attack hyperparameters (\"-\": the attack has no such setting).</p>")
    parts.append(_table(["attack", "class", "type", "norm", "ε", "steps", "step size", "restarts", "eot",
                         "random start", "other"], attack_rows, left=(0, 10)))
    everything = {k: results[k] for k in ("settings", "software", "device") if k in results}
    parts.append("<details><summary>Everything the run recorded (settings, software, device) as JSON</summary>"
                 f"<pre>{html.escape(json.dumps(everything, indent=1))}</pre></details></section>")
    return "".join(parts)


# ---- the page ------------------------------------------------------------------------------------------

def render(results: dict, figures: dict, has_examples: bool = True) -> str:
    """The report page; ``figures`` is :func:`robustkit.eval.plots.all_figures`'s dict."""
    sections = [("checks", "Warnings", _warnings(results)), ("summary", "Headline", _headline(results)),
                ("attacks", "Attacks", _attack_tables(results)),
                ("accuracy-vs-eps", "Accuracy vs ε", _curves(results, figures)),
                ("transfer", "Transfer", _transfer(results, figures)),
                ("per-class", "Per class", _per_class(results))]
    sections += [(key, title, _figure_section(results, key, title, caption, figures.get(key), has_examples))
                 for key, title, caption in FIGURE_SECTIONS]
    sections.append(("settings", "Settings", _settings(results)))
    present = [(key, title, body) for key, title, body in sections if body]
    nav = "".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _ in present)
    return ("<!doctype html><html lang=en><head><meta charset='utf-8'><title>robustkit evaluation</title>"
            f"<style>{STYLE}</style></head><body>{_title(results)}<nav>{nav}</nav>"
            + "\n".join(body for _, _, body in present) + "</body></html>")


__all__ = ["render", "FIXED_COLUMNS", "MINIMAL_COLUMNS"]
