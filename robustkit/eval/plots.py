"""PNG figures of a run (matplotlib, Agg backend), each drawn from ``results.json`` or ``examples.pt``."""
from __future__ import annotations

import io
import math
from typing import Dict, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import torch  # noqa: E402

MAX_CONFUSION_CLASSES = 50   # a 1000 x 1000 matrix is unreadable as a picture; the JSON keeps it whole
MAX_PANELS = 8               # attacks shown in the image grids and confusion panels


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _number(v) -> float:
    return math.nan if v is None else float(v)


def accuracy_vs_eps(results: dict) -> Optional[bytes]:
    curves = results.get("curves") or {}
    if not curves:
        return None
    norms = sorted({c["norm"] or "?" for c in curves.values()})
    fig, axes = plt.subplots(1, len(norms), figsize=(5 * len(norms), 3.6), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for name, c in curves.items():
            if (c["norm"] or "?") == norm:
                ax.plot([_number(e) for e in c["eps"]], [_number(a) for a in c["accuracy"]], marker=".",
                        label=f"{name} ({c['source']})")
        ax.set_xlabel(f"eps ({norm})")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def transfer_heatmap(results: dict) -> Optional[bytes]:
    transfer = results.get("transfer")
    if not transfer:
        return None
    matrix = [[_number(v) for v in row] for row in transfer["matrix"]]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(transfer["targets"]), 1.0 + 0.6 * len(transfer["sources"])))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(transfer["targets"])), transfer["targets"], rotation=30, ha="right")
    ax.set_yticks(range(len(transfer["sources"])), transfer["sources"])
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    fig.colorbar(image, ax=ax, label="success rate")
    return _png(fig)


def confusions(results: dict) -> Optional[bytes]:
    """All attacks' clean-vs-adversarial confusion matrices side by side (Defendr Figure 15)."""
    panels = [(n, e["confusion"]) for n, e in results["attacks"].items()
              if e.get("confusion") and len(e["confusion"]) <= MAX_CONFUSION_CLASSES][:MAX_PANELS]
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, matrix) in zip(axes.flat, panels):
        ax.imshow(matrix, cmap="magma")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("adversarial prediction", fontsize=8)
        ax.set_ylabel("clean prediction", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _mosaic(cells, rows: int, cols: int) -> torch.Tensor:
    """Tiles ``rows x cols`` RGB images ``[3, H, W]`` (row-major list) into one ``[H', W', 3]`` array with
    white gutters: one imshow instead of one axes per image keeps the report fast."""
    _, h, w = cells[0].shape
    pad = max(2, h // 4)
    canvas = torch.ones(3, rows * (h + pad), cols * (w + pad))
    for k, cell in enumerate(cells):
        r, c = divmod(k, cols)
        top, left = r * (h + pad) + pad, c * (w + pad)
        canvas[:, top:top + h, left:left + w] = cell
    return canvas.permute(1, 2, 0).clamp(0, 1)


def _rgb(image: torch.Tensor) -> torch.Tensor:
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]


def _grid_figure(cells, labels, row_names, cols: int) -> bytes:
    """The mosaic with a label above every cell and a name left of every row."""
    rows = len(row_names)
    mosaic = _mosaic(cells, rows, cols)
    height, width = mosaic.shape[:2]
    fig = plt.figure(figsize=(1.1 * cols + 1.4, 1.2 * rows))
    ax = fig.add_axes((0.15, 0.0, 0.85, 1.0))
    ax.imshow(mosaic.numpy(), interpolation="nearest")
    ax.axis("off")
    cell_h, cell_w = height / rows, width / cols
    pad = cell_h - cells[0].shape[1]
    for k, label in enumerate(labels):
        r, c = divmod(k, cols)
        ax.text(c * cell_w + cells[0].shape[2] / 2, r * cell_h + pad - 1, label, ha="center", va="bottom",
                fontsize=6)
    for r, name in enumerate(row_names):
        ax.text(-2, r * cell_h + pad + cells[0].shape[1] / 2, name, ha="right", va="center", fontsize=7)
    return _png(fig)


def example_grid(examples: dict) -> Optional[bytes]:
    """Rows: clean image, then for every attack the adversarial image and its perturbation amplified to the
    full grey range (0.5 + delta / (2 max|delta|)); above each image its predicted class."""
    x = examples["x"]
    k, names = x.shape[0], list(examples["adv"])[:MAX_PANELS]
    cells = [_rgb(x[j]) for j in range(k)]
    labels = [f"{int(examples['clean_pred'][j])} (y={int(examples['y'][j])})" for j in range(k)]
    row_names = ["clean"]
    for name in names:
        deltas = [examples["adv"][name][j] - x[j] for j in range(k)]
        scales = [d.abs().max().clamp_min(1e-12) for d in deltas]
        cells += [_rgb(examples["adv"][name][j]) for j in range(k)]
        cells += [_rgb(0.5 + d / (2 * s)) for d, s in zip(deltas, scales)]
        labels += [str(int(examples["adv_pred"][name][j])) for j in range(k)]
        labels += [f"x{0.5 / s.item():.3g}" for s in scales]
        row_names += [name, "perturbation"]
    return _grid_figure(cells, labels, row_names, k)


def _heat(image: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    colour = torch.tensor(plt.get_cmap("jet")(cam.numpy())[..., :3], dtype=torch.float32).permute(2, 0, 1)
    return 0.55 * image.mean(dim=0, keepdim=True).expand(3, -1, -1) + 0.45 * colour


def gradcam_grid(examples: dict) -> Optional[bytes]:
    """Grad-CAM heat maps over the images: clean row, then one row per attack (Defendr section 6.3)."""
    if examples.get("cam_clean") is None:
        return None
    x = examples["x"]
    k = x.shape[0]
    names = [n for n, c in examples["cam_adv"].items() if c is not None][:MAX_PANELS]
    rows = [("clean", x, examples["cam_clean"], examples["clean_pred"])]
    rows += [(n, examples["adv"][n], examples["cam_adv"][n], examples["adv_pred"][n]) for n in names]
    cells, labels = [], []
    for _, images, cams, preds in rows:
        cells += [_heat(images[j], cams[j]) for j in range(k)]
        labels += [str(int(preds[j])) for j in range(k)]
    return _grid_figure(cells, labels, [r[0] for r in rows], k)


def all_figures(results: dict, examples: Optional[dict]) -> Dict[str, bytes]:
    figures = {"accuracy_vs_eps": accuracy_vs_eps(results), "transfer": transfer_heatmap(results)}
    figures["confusion"] = confusions(results)
    if examples is not None:
        figures["examples"] = example_grid(examples)
        figures["gradcam"] = gradcam_grid(examples)
    return {k: v for k, v in figures.items() if v is not None}
