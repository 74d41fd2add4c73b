"""PNG figures of a run (matplotlib, Agg backend), each drawn from ``results.json`` or ``examples.pt``.

The per-attack figures (confusion matrices, example images, Grad-CAM) show every attack: past
:data:`ATTACKS_PER_FIGURE` attacks they continue on further pages (``examples``, ``examples-2``, ...), and an
attack that cannot be drawn is listed in :attr:`FigureSection.omitted` with the reason, which the report prints.
"""
from __future__ import annotations

import dataclasses
import io
import math
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import torch  # noqa: E402

MAX_CONFUSION_CLASSES = 50   # a 1000 x 1000 matrix is unreadable as a picture; the JSON keeps it whole
ATTACKS_PER_FIGURE = 10      # attacks on one page of a per-attack figure; more continue on the next page
CONFUSION_COLUMNS = 5
DPI = 110
PAGE_INCHES = 10.0           # the widest figure: 1100 px at DPI, the report's column width


@dataclasses.dataclass
class FigureSection:
    """A per-attack figure: its pages (the attacks drawn on each, the PNG) and the attacks left out, with why."""
    name: str
    pages: List[Tuple[List[str], bytes]]
    omitted: Dict[str, str] = dataclasses.field(default_factory=dict)

    def page_names(self) -> List[str]:
        return [self.name if i == 0 else f"{self.name}-{i + 1}" for i in range(len(self.pages))]

    @property
    def shown(self) -> List[str]:
        return [a for attacks, _ in self.pages for a in attacks]


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    # a tight box keeps long tick labels and colour bars inside the image instead of cutting them off
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return buffer.getvalue()


def _number(v) -> float:
    return math.nan if v is None else float(v)


def _chunks(names: Sequence[str], size: int) -> List[List[str]]:
    return [list(names[i:i + size]) for i in range(0, len(names), size)]


NORM_LABELS = {"linf": "L-inf", "l2": "L2", "l1": "L1", "l0": "L0"}


def accuracy_vs_eps(results: dict) -> Optional[bytes]:
    curves = results.get("curves") or {}
    if not curves:
        return None
    norms = sorted({c["norm"] or "?" for c in curves.values()})
    fig, axes = plt.subplots(1, len(norms), figsize=(min(PAGE_INCHES, 4.6 * len(norms)), 3.2), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for name, c in curves.items():
            if (c["norm"] or "?") == norm:
                ax.plot([_number(e) for e in c["eps"]], [_number(a) for a in c["accuracy"]], marker=".",
                        label=f"{name} ({c['source']})")
        ax.set_xlabel(f"eps ({NORM_LABELS.get(norm, norm)})")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def transfer_heatmap(results: dict) -> Optional[bytes]:
    """Success rates, rows: sources (attacks or source models), columns: target models; sized to its labels."""
    transfer = results.get("transfer")
    if not transfer:
        return None
    sources, targets = transfer["sources"], transfer["targets"]
    matrix = [[_number(v) for v in row] for row in transfer["matrix"]]
    label_inches = 0.075 * max(len(str(s)) for s in sources)
    fig, ax = plt.subplots(figsize=(min(PAGE_INCHES, 1.6 + label_inches + 0.8 * len(targets)),
                                    1.2 + 0.4 * len(sources)))
    # grey: an undefined rate (the target classifies none of the images correctly)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(targets)), targets, rotation=30 if len(targets) > 1 else 0,
                  ha="right" if len(targets) > 1 else "center", fontsize=8)
    ax.set_yticks(range(len(sources)), sources, fontsize=8)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="white" if not math.isnan(v) and v < 0.6 else "black", fontsize=8)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    fig.colorbar(image, ax=ax, label="success rate", fraction=0.08)
    return _png(fig)


def confusions(results: dict) -> FigureSection:
    """Every attack's clean-vs-adversarial confusion matrix (Defendr Figure 15), up to
    :data:`ATTACKS_PER_FIGURE` per page."""
    drawable, omitted = [], {}
    for name, entry in results["attacks"].items():
        matrix = entry.get("confusion")
        if not matrix:
            omitted[name] = "no confusion matrix in results.json (metrics without \"confusion\")"
        elif len(matrix) > MAX_CONFUSION_CLASSES:
            omitted[name] = (f"{len(matrix)} classes (more than {MAX_CONFUSION_CLASSES} are unreadable as a "
                             "picture; results.json holds the counts)")
        else:
            drawable.append(name)
    pages = [(names, _confusion_page(results, names)) for names in _chunks(drawable, ATTACKS_PER_FIGURE)]
    return FigureSection("confusion", pages, omitted)


def _confusion_page(results: dict, names: List[str]) -> bytes:
    cols = min(CONFUSION_COLUMNS, len(names))
    rows = -(-len(names) // cols)
    side = min(2.2, PAGE_INCHES / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, (side + 0.2) * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for k, (ax, name) in enumerate(zip(axes.flat, names)):
        matrix = results["attacks"][name]["confusion"]
        ax.imshow(matrix, cmap="magma")
        ax.set_title(name, fontsize=9)
        classes = len(matrix)
        ticks = range(classes) if classes <= 10 else range(0, classes, -(-classes // 5))
        ax.set_xticks(list(ticks))
        ax.set_yticks(list(ticks))
        ax.tick_params(labelsize=6, length=2)
        if k // cols == rows - 1 or k + cols >= len(names):
            ax.set_xlabel("adversarial prediction", fontsize=7)
        if k % cols == 0:
            ax.set_ylabel("clean prediction", fontsize=7)
    fig.tight_layout(h_pad=1.2)
    return _png(fig)


# ---- image grids ---------------------------------------------------------------------------------------

def _rgb(image: torch.Tensor) -> torch.Tensor:
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]


def _grid_figure(cells: List[List[torch.Tensor]], labels: List[List[Tuple[str, str]]], headers: List[str],
                 row_names: List[str], max_cell_inches: float, page_columns: int) -> bytes:
    """A ``rows x cols`` grid of RGB images ``[3, H, W]`` drawn as one mosaic (one imshow keeps the report
    fast), a (text, colour) label above every cell, a header above every column and a name left of every row.
    Cells are sized for ``page_columns`` columns, so that a shorter last page has the same cell size."""
    rows, cols = len(cells), len(cells[0])
    _, h, w = cells[0][0].shape
    gap_x, gap_y = max(2, w // 8), max(4, h // 3)      # the vertical gap holds each cell's label
    canvas = torch.ones(3, rows * (h + gap_y), cols * (w + gap_x))
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            top, left = r * (h + gap_y) + gap_y, c * (w + gap_x)
            canvas[:, top:top + h, left:left + w] = cell.clamp(0, 1)
    cell_inches = min(max_cell_inches, (PAGE_INCHES - 0.8) / max(cols, page_columns))
    fig = plt.figure(figsize=(cell_inches * cols, cell_inches * rows * (h + gap_y) / (w + gap_x)))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    fontsize = 7 if cell_inches >= 0.6 else 6
    for r, row in enumerate(labels):
        for c, (text, colour) in enumerate(row):
            ax.text(c * (w + gap_x) + w / 2, r * (h + gap_y) + gap_y - 1, text, ha="center", va="bottom",
                    fontsize=fontsize, color=colour)
    for c, header in enumerate(headers):
        if header:
            ax.text(c * (w + gap_x) + w / 2, -gap_y * 0.6, header, ha="left", va="bottom", rotation=35,
                    fontsize=fontsize + 1, rotation_mode="anchor")
    for r, name in enumerate(row_names):
        ax.text(-gap_x, r * (h + gap_y) + gap_y + h / 2, name, ha="right", va="center", fontsize=fontsize)
    return _png(fig)


def _prediction_label(pred: int, y: int) -> Tuple[str, str]:
    """The predicted class, red where it is wrong."""
    return str(pred), ("black" if pred == y else "#c00000")


def example_grid(examples: dict) -> FigureSection:
    """Rows: the first images; columns: the clean image, then for every attack the adversarial image and its
    perturbation amplified to the full grey range (0.5 + delta / (2 max|delta|), the factor written above;
    "unchanged" where the attack returned the clean image).
    Above each image its predicted class, red when wrong."""
    x, y = examples["x"], examples["y"]
    k, names = x.shape[0], list(examples["adv"])
    pages = []
    for page in _chunks(names, ATTACKS_PER_FIGURE):
        cells, labels = [], []
        for j in range(k):
            yj = int(y[j])
            row, row_labels = [_rgb(x[j])], [_prediction_label(int(examples["clean_pred"][j]), yj)]
            for name in page:
                delta = examples["adv"][name][j] - x[j]
                peak = delta.abs().max().item()
                unchanged = peak < 1e-7           # the attack returned the clean image: nothing to amplify
                scale = 1.0 if unchanged else peak
                row += [_rgb(examples["adv"][name][j]), _rgb(0.5 + delta / (2 * scale))]
                row_labels += [_prediction_label(int(examples["adv_pred"][name][j]), yj),
                               ("unchanged" if unchanged else f"x{0.5 / scale:.3g}", "#555555")]
            cells.append(row)
            labels.append(row_labels)
        headers = ["clean"] + [h for name in page for h in (name, "")]
        pages.append((page, _grid_figure(cells, labels, headers, [f"y={int(y[j])}" for j in range(k)],
                                         max_cell_inches=0.7,
                                         page_columns=1 + 2 * min(len(names), ATTACKS_PER_FIGURE))))
    return FigureSection("examples", pages)


def _heat(image: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    colour = torch.tensor(plt.get_cmap("jet")(cam.numpy())[..., :3], dtype=torch.float32).permute(2, 0, 1)
    return 0.55 * image.mean(dim=0, keepdim=True).expand(3, -1, -1) + 0.45 * colour


def gradcam_grid(examples: dict) -> Optional[FigureSection]:
    """Grad-CAM heat maps over the images (Defendr section 6.3): rows are images, columns the clean image and
    then each attack's adversarial image. None for a model without a convolution (no maps were saved)."""
    if examples.get("cam_clean") is None:
        return None
    x, y = examples["x"], examples["y"]
    k = x.shape[0]
    names = [n for n in examples["adv"] if examples["cam_adv"].get(n) is not None]
    omitted = {n: "no Grad-CAM map was saved for it" for n in examples["adv"] if n not in names}
    pages = []
    for page in _chunks(names, ATTACKS_PER_FIGURE):
        cells, labels = [], []
        for j in range(k):
            yj = int(y[j])
            cells.append([_heat(x[j], examples["cam_clean"][j])]
                         + [_heat(examples["adv"][n][j], examples["cam_adv"][n][j]) for n in page])
            labels.append([_prediction_label(int(examples["clean_pred"][j]), yj)]
                          + [_prediction_label(int(examples["adv_pred"][n][j]), yj) for n in page])
        pages.append((page, _grid_figure(cells, labels, ["clean"] + page, [f"y={int(y[j])}" for j in range(k)],
                                         max_cell_inches=0.6, page_columns=1 + min(len(names), ATTACKS_PER_FIGURE))))
    return FigureSection("gradcam", pages, omitted)


def all_figures(results: dict, examples: Optional[dict]) -> Dict[str, object]:
    """``accuracy_vs_eps`` and ``transfer`` (PNG bytes or None; no heat map when the attacked model is the
    only target) and the per-attack :class:`FigureSection` s
    ``confusion``, ``examples`` and ``gradcam`` (None where there is nothing to draw from)."""
    from robustkit.eval.summary import transfer_only_to_itself
    return {"accuracy_vs_eps": accuracy_vs_eps(results),
            "transfer": None if transfer_only_to_itself(results) else transfer_heatmap(results),
            "confusion": confusions(results),
            "examples": example_grid(examples) if examples is not None else None,
            "gradcam": gradcam_grid(examples) if examples is not None else None}


__all__ = ["all_figures", "FigureSection", "accuracy_vs_eps", "transfer_heatmap", "confusions", "example_grid",
           "gradcam_grid", "ATTACKS_PER_FIGURE", "MAX_CONFUSION_CLASSES"]
