"""The report of a run (results.csv, plots, report.html), on real evaluate() runs of tiny models:

* the headline comes from fixed-budget attacks only, chosen by type (FixedBudgetAttack / MinimalNormAttack),
  never by class name, and is the per-image worst case at one budget;
* every attack appears in every per-attack figure section or in its "not shown" note, also past one page;
* eps / norm / steps are in results.csv after the older columns, and in the report's tables;
* every navigation link resolves, per-class detail is one collapsed table, the transfer section says when
  there is nothing to transfer to and shows the matrix when there is.
"""
import csv
import html.parser
import json

import pytest
import torch

from robustkit.attacks import FGSM, PGD, DeepFool
from robustkit.attacks.base import Attack, AttackOutput
from robustkit.eval import evaluate
from robustkit.eval import plots
from robustkit.eval.report import SETTING_COLUMNS, headline_text, write_report
from robustkit.eval.summary import headline_budget
from tests._tiny import tiny_cnn


class _Page(html.parser.HTMLParser):
    """Ids, links, sections (with their data-shown / data-omitted lists), details and notes of a report."""

    def __init__(self):
        super().__init__()
        self.ids, self.links, self.sections, self.details, self.tables = set(), [], {}, 0, 0
        self.text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"][1:])
        if tag == "section" and "data-shown" in attrs:
            self.sections[attrs["id"]] = (json.loads(attrs["data-shown"]), json.loads(attrs["data-omitted"]))
        self.details += tag == "details"
        self.tables += tag == "table"

    def handle_data(self, data):
        self.text.append(data)


def _page(out) -> _Page:
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    return page


class DeepFoolNamedPGD(PGD):
    """A fixed-budget attack whose class name says DeepFool: the report must go by its type."""


class NotAnEpsAttack(Attack):
    """Neither fixed-budget nor minimal-norm (it has an eps attribute all the same)."""

    eps = 0.5

    def _attack(self, x, y, target, generator):
        return AttackOutput(adv=x.clone(), steps=torch.zeros(x.shape[0], dtype=torch.int64))


def _data(n=24, num_classes=10, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 10, 10, generator=g), torch.randint(0, num_classes, (n,), generator=g)


def _run(out, attacks, model=None, **kw):
    model = model if model is not None else tiny_cnn()
    kw.setdefault("batch_size", 12)
    return evaluate(model, kw.pop("data", None) or _data(), attacks(model), out=out, progress=False,
                    checks="static", **kw)


def _mixed(model):
    return {"fgsm@0.05": FGSM(model, eps=0.05), "fgsm@0.2": FGSM(model, eps=0.2),
            "pgd@0.05": PGD(model, eps=0.05, steps=2), "deepfool": DeepFool(model, steps=3),
            "deepfool_named": DeepFoolNamedPGD(model, eps=0.2, steps=1), "plain": NotAnEpsAttack(model)}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = _run(out, _mixed, examples=4)
    finally:
        torch.set_num_threads(threads)
    return out, results


def test_attack_kinds_come_from_the_types_not_the_names(mixed):
    _, results = mixed
    kinds = {n: e["attack"]["kind"] for n, e in results["attacks"].items()}
    assert kinds == {"fgsm@0.05": "fixed_budget", "fgsm@0.2": "fixed_budget", "pgd@0.05": "fixed_budget",
                     "deepfool": "minimal_norm", "deepfool_named": "fixed_budget", "plain": "other"}


def test_headline_is_the_per_image_worst_case_over_fixed_budget_attacks_at_one_budget(mixed):
    out, results = mixed
    worst = results["worst_case"]
    # two attacks at 0.05 and two at 0.2: the tie goes to the first budget of the run
    assert (worst["norm"], worst["eps"], worst["attacks"]) == ("linf", 0.05, ["fgsm@0.05", "pgd@0.05"])
    records = [json.loads(line) for f in sorted((out / "records").glob("*.jsonl"))
               for line in f.read_text().splitlines()]
    for group in worst["by_budget"]:
        survived = [r["clean_pred"][i] == r["y"][i] and all(r["attacks"][a]["pred"][i] == r["y"][i]
                                                            for a in group["attacks"])
                    for r in records for i in range(len(r["y"]))]
        assert len(survived) == results["n"]
        assert group["robust_accuracy"] == pytest.approx(sum(survived) / len(survived))
        assert group["robust_accuracy"] <= min(results["attacks"][a]["metrics"]["robust_accuracy"]
                                               for a in group["attacks"])
    assert {a for g in worst["by_budget"] for a in g["attacks"]} == {"fgsm@0.05", "fgsm@0.2", "pgd@0.05",
                                                                     "deepfool_named"}
    assert headline_budget(results["settings"]["attacks"])["attacks"] == worst["attacks"]
    text = "".join(_page(out).text)
    assert "Robust accuracy" in text and "deepfool (L2): median L2" in text
    lines = headline_text(results)
    assert lines[0].startswith(f"worst-case robust accuracy {worst['robust_accuracy']:.4f} at L-inf eps")
    assert any(line.startswith("deepfool (minimal-norm, L2)") for line in lines)


def test_results_csv_has_the_old_columns_first_then_eps_and_steps(mixed):
    out, results = mixed
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
        f.seek(0)
        header = next(csv.reader(f))
    assert header[:3] == ["attack", "n", "clean_accuracy"] and tuple(header[-len(SETTING_COLUMNS):]) == SETTING_COLUMNS
    assert header.index("images_per_second") < header.index("eps")
    by_name = {r["attack"]: r for r in rows}
    assert by_name["pgd@0.05"]["eps"] == "0.05" and by_name["pgd@0.05"]["steps"] == "2"
    assert by_name["pgd@0.05"]["attack_type"] == "fixed_budget" and by_name["pgd@0.05"]["norm"] == "linf"
    assert by_name["deepfool"]["eps"] == "" and by_name["deepfool"]["steps"] == "3"
    assert by_name["fgsm@0.2"]["restarts"] == "1" and by_name["fgsm@0.2"]["eot"] == "1"


def test_links_resolve_and_per_class_is_one_collapsed_table(mixed):
    out, results = mixed
    page = _page(out)
    assert page.links and set(page.links) <= page.ids
    assert {"summary", "attacks", "settings", "confusion", "examples", "gradcam", "per-class"} <= set(page.links)
    report = (out / "report.html").read_text()
    per_class = report[report.index('id="per-class"'):report.index("</section>", report.index('id="per-class"'))]
    assert per_class.count("<table") == 1 and "<details>" in per_class
    assert report.count("data-key=\"clean/per_class/accuracy/") == 10


def test_every_attack_is_in_every_figure_section_or_its_note(mixed):
    out, results = mixed
    page = _page(out)
    for key in ("confusion", "examples", "gradcam"):
        shown, omitted = page.sections[key]
        assert sorted(shown + omitted) == sorted(results["attacks"]), key
        assert shown == list(results["attacks"]), key      # everything drawable is drawn
    for png in ("confusion", "examples", "gradcam", "accuracy_vs_eps"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000


def test_the_model_alone_as_transfer_target_is_said_not_drawn(mixed):
    out, results = mixed
    report = (out / "report.html").read_text()
    assert results["transfer"]["targets"] == ["model"]
    assert "evaluated only on the attacked model itself" in report
    assert "transfer/matrix/" not in report and not (out / "plots" / "transfer.png").exists()


def test_many_attacks_continue_on_further_pages_and_big_confusions_are_named(tmp_path, one_thread):
    n_attacks = plots.ATTACKS_PER_FIGURE + 3
    model = tiny_cnn(num_classes=60)
    attacks = lambda m: {f"fgsm@{k}": FGSM(m, eps=0.01 * (k + 1)) for k in range(n_attacks)}   # noqa: E731
    results = _run(tmp_path / "many", attacks, model=model, data=_data(12, num_classes=60), examples=3,
                   transfer_to={"other": tiny_cnn(seed=5, num_classes=60)})
    page = _page(tmp_path / "many")
    for key in ("examples", "gradcam"):
        shown, omitted = page.sections[key]
        assert shown == list(results["attacks"]) and omitted == [], key
        assert (tmp_path / "many" / "plots" / f"{key}-2.png").exists()
    shown, omitted = page.sections["confusion"]
    assert shown == [] and sorted(omitted) == sorted(results["attacks"])
    report = (tmp_path / "many" / "report.html").read_text()
    assert "60 classes (more than 50" in report
    # a real transfer matrix: the attacked model and the other one, every cell in the table and a heat map
    assert results["transfer"]["targets"] == ["model", "other"]
    assert report.count('data-key="transfer/matrix/') == 2 * n_attacks
    assert (tmp_path / "many" / "plots" / "transfer.png").exists()
    # 60 classes: the per-class table keeps to the weakest classes and says so
    assert "60 classes: the table lists the" in report


def test_a_run_without_fixed_budget_attacks_reports_no_robust_accuracy(tmp_path, one_thread):
    results = _run(tmp_path / "df", lambda m: {"deepfool": DeepFool(m, steps=3)}, examples=0)
    assert "worst_case" not in results
    report = (tmp_path / "df" / "report.html").read_text()
    assert "No fixed-budget attack in this run" in report
    page = _page(tmp_path / "df")
    for key in ("examples", "gradcam"):
        assert page.sections[key] == ([], ["deepfool"])
    assert "no examples.pt" in report
    assert headline_text(results)[0].startswith("no fixed-budget attack")


def test_an_older_results_json_still_renders(mixed, tmp_path):
    out, results = mixed
    old = json.loads(json.dumps(results))
    old["worst_case"] = {"robust_accuracy": 0.0}
    for entry in [*old["attacks"].values()]:
        entry["attack"].pop("kind")
    (tmp_path / "results.json").write_text(json.dumps(old))
    write_report(tmp_path)
    report = (tmp_path / "report.html").read_text()
    assert "predates the per-budget worst case" in report
    assert "No fixed-budget attack" not in report


def test_check_model_warnings_come_first_and_are_linked(mixed, tmp_path):
    _, results = mixed
    flagged = dict(results, warnings=[{"code": "softmax_output", "message": "the outputs sum to one"}])
    (tmp_path / "results.json").write_text(json.dumps(flagged))
    write_report(tmp_path)
    report = (tmp_path / "report.html").read_text()
    assert report.index('id="checks"') < report.index('id="summary"')
    assert 'href="#checks"' in report and "softmax_output" in report and "1 warning" in report


def test_a_model_without_convolutions_names_grad_cam_as_not_shown(tmp_path, one_thread):
    mlp = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 10)).eval()   # noqa: E731
    results = _run(tmp_path / "mlp", lambda m: {"fgsm": FGSM(m, eps=0.1)}, model=mlp(), examples=2)
    page = _page(tmp_path / "mlp")
    assert page.sections["gradcam"] == ([], ["fgsm"]) and page.sections["examples"] == (["fgsm"], [])
    assert "no nn.Conv2d layer" in (tmp_path / "mlp" / "report.html").read_text()
    assert results["worst_case"]["attacks"] == ["fgsm"]


def test_grad_cam_of_a_frozen_model_equals_the_trainable_models(one_thread):
    """A model whose parameters are all frozen (a defense's fixed classifier) still gets its heat maps."""
    from robustkit.eval.gradcam import grad_cam
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = torch.rand(3, 1, 10, 10)
    trainable = grad_cam(model, x)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = grad_cam(model, x)
    assert frozen is not None and torch.equal(frozen, trainable)
