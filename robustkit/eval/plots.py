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


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
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


def confusion(matrix, name: str) -> Optional[bytes]:
    if not matrix or len(matrix) > MAX_CONFUSION_CLASSES:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4))
    image = ax.imshow(matrix, cmap="magma")
    ax.set_xlabel(f"prediction under {name}")
    ax.set_ylabel("prediction on clean image")
    fig.colorbar(image, ax=ax, label="images")
    return _png(fig)


def _show(ax, image: torch.Tensor, title: str, cmap=None) -> None:
    if image.dim() == 3:
        image = image.permute(1, 2, 0)
        if image.shape[2] == 1:
            image, cmap = image[..., 0], cmap or "gray"
    ax.imshow(image.clamp(0, 1).numpy(), cmap=cmap, vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def example_grid(examples: dict) -> Optional[bytes]:
    """Rows: clean image, then for every attack the adversarial image and its perturbation amplified to the
    full grey range (0.5 + delta / (2 max|delta|))."""
    x = examples["x"]
    k, names = x.shape[0], list(examples["adv"])
    fig, axes = plt.subplots(1 + 2 * len(names), k, figsize=(1.3 * k, 1.4 * (1 + 2 * len(names))), squeeze=False)
    for j in range(k):
        _show(axes[0][j], x[j], f"clean: {int(examples['clean_pred'][j])} (y={int(examples['y'][j])})")
        for i, name in enumerate(names):
            adv = examples["adv"][name][j]
            delta = adv - x[j]
            scale = delta.abs().max().clamp_min(1e-12)
            _show(axes[1 + 2 * i][j], adv, f"{name}: {int(examples['adv_pred'][name][j])}")
            _show(axes[2 + 2 * i][j], 0.5 + delta / (2 * scale), f"delta x{0.5 / scale.item():.3g}")
    return _png(fig)


def gradcam_grid(examples: dict) -> Optional[bytes]:
    """Grad-CAM heat maps over the images: clean row, then one row per attack (Defendr section 6.3)."""
    if examples.get("cam_clean") is None:
        return None
    x, names = examples["x"], [n for n, c in examples["cam_adv"].items() if c is not None]
    k = x.shape[0]
    fig, axes = plt.subplots(1 + len(names), k, figsize=(1.3 * k, 1.4 * (1 + len(names))), squeeze=False)
    rows = [("clean", x, examples["cam_clean"], examples["clean_pred"])]
    rows += [(n, examples["adv"][n], examples["cam_adv"][n], examples["adv_pred"][n]) for n in names]
    for i, (name, images, cams, preds) in enumerate(rows):
        for j in range(k):
            grey = images[j].mean(dim=0)
            axes[i][j].imshow(grey.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i][j].imshow(cams[j].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[i][j].set_title(f"{name}: {int(preds[j])}", fontsize=7)
            axes[i][j].axis("off")
    return _png(fig)


def all_figures(results: dict, examples: Optional[dict]) -> Dict[str, bytes]:
    figures = {"accuracy_vs_eps": accuracy_vs_eps(results), "transfer": transfer_heatmap(results)}
    for name, entry in results["attacks"].items():
        figures[f"confusion_{name}"] = confusion(entry.get("confusion"), name)
    if examples is not None:
        figures["examples"] = example_grid(examples)
        figures["gradcam"] = gradcam_grid(examples)
    return {k: v for k, v in figures.items() if v is not None}
