"""The pictures of an evaluation report: the row-normalised confusion matrix (with the most-confused pairs
named, so it stays readable at 150 classes), the IoU of every class as bars, and a gallery of the images
with the lowest mIoU (image, truth, prediction side by side)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..visualization import colorize, default_palette, preview
from .engine import predict_sample

# Up to this many classes, the matrix shows every class name and the share in every cell.
NAMED_CLASSES = 40
ANNOTATED_CLASSES = 12
CONFUSED_PAIRS = 20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each truth row as shares of that class's pixels (rows of absent classes stay 0)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)


def most_confused(confusion: np.ndarray, classes: dict, count: int = CONFUSED_PAIRS) -> list:
    """(truth name, predicted name, share of the truth class's pixels) of the largest off-diagonal
    shares, the largest first."""
    shares = row_normalised(confusion)
    np.fill_diagonal(shares, 0)
    order = np.argsort(-shares, axis=None, kind="stable")[:count]
    pairs = [np.unravel_index(index, shares.shape) for index in order]
    return [(classes[int(t)], classes[int(p)], float(shares[t, p])) for t, p in pairs if shares[t, p] > 0]


def plot_confusion(confusion: np.ndarray, classes: dict, path: Path):
    """The row-normalised matrix, and beside it the most-confused pairs as named bars."""
    plt = _pyplot()
    size = len(classes)
    shares = row_normalised(confusion)
    pairs = most_confused(confusion, classes)
    side = min(12, 3 + 0.35 * size)
    figure, (matrix_axis, pairs_axis) = plt.subplots(
        1, 2, figsize=(side + 6, max(side, 0.3 * len(pairs) + 1.5)), gridspec_kw={"width_ratios": [side, 5]}
    )
    image = matrix_axis.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=matrix_axis, fraction=0.046, pad=0.04, label="share of the true class's pixels")
    if size <= NAMED_CLASSES:
        names = [str(classes[c]) for c in range(size)]
        matrix_axis.set_xticks(range(size), names, rotation=90, fontsize=8)
        matrix_axis.set_yticks(range(size), names, fontsize=8)
    if size <= ANNOTATED_CLASSES:
        for t in range(size):
            for p in range(size):
                color = "white" if shares[t, p] > 0.5 else "black"
                matrix_axis.text(p, t, f"{shares[t, p]:.2f}", ha="center", va="center", fontsize=7, color=color)
    matrix_axis.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (rows sum to 1)")
    if pairs:
        labels = [f"{truth} → {predicted}" for truth, predicted, _ in pairs]
        pairs_axis.barh(range(len(pairs)), [share for *_, share in pairs], color="tab:red")
        pairs_axis.set_yticks(range(len(pairs)), labels, fontsize=8)
        pairs_axis.invert_yaxis()
        pairs_axis.set(xlabel="share of the true class's pixels", title="Most confused (truth → predicted)")
        pairs_axis.grid(axis="x", alpha=0.3)
    else:
        pairs_axis.axis("off")
        pairs_axis.text(0.5, 0.5, "no confusion", ha="center", va="center")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_class_iou(rows: list, path: Path):
    """Horizontal bars of every class's IoU, the lowest on top; a class with no IoU says why."""
    plt = _pyplot()
    rows = sorted(rows, key=lambda row: -1 if row["iou"] is None else row["iou"])
    figure, axis = plt.subplots(figsize=(7.5, 1.2 + 0.22 * len(rows)))
    values = [row["iou"] or 0 for row in rows]
    axis.barh(range(len(rows)), values, color="tab:blue")
    for position, row in enumerate(rows):
        if row["iou"] is None:
            axis.annotate("absent, not predicted", (0, position), xytext=(3, 0), textcoords="offset points",
                          va="center", fontsize=7, color="tab:gray")  # fmt: skip
    # 0.22 inch (16 points) per row: 7-point names fit however many classes there are.
    axis.set_yticks(range(len(rows)), [row["name"] for row in rows], fontsize=9 if len(rows) <= NAMED_CLASSES else 7)
    axis.set_ylim(len(rows) - 0.5, -0.5)  # the lowest IoU on top, no empty margin
    axis.set_axisbelow(True)
    axis.set(xlim=(0, 1), xlabel="IoU", title="IoU per class")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@torch.no_grad()
def draw_worst_images(
    model, dataset, settings, image_scores: list, classes: dict, path: Path, count: int = 6, processor=None
) -> list:
    """One row per image with the lowest mIoU: the image, its truth and the prediction. Returns the
    (index, mIoU) drawn."""
    plt = _pyplot()
    scored = [(index, score) for index, score in image_scores if score == score]  # NaN: no labelled pixel
    worst = sorted(scored, key=lambda item: item[1])[:count]
    if not worst:
        return []
    palette = default_palette(len(classes))
    model.eval()
    figure, axes = plt.subplots(len(worst), 3, figsize=(9, 3.1 * len(worst)), squeeze=False)
    for row, (index, score) in zip(axes, worst):
        image, label = dataset.load_pair(index)
        prediction = predict_sample(model, dataset, index, settings, processor)
        panels = ((f"#{index}  mIoU {score:.3f}", preview(image)), ("truth", colorize(label, palette)),
                  ("prediction", colorize(prediction, palette)))  # fmt: skip
        for axis, (title, picture) in zip(row, panels):
            axis.imshow(picture, interpolation="nearest")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    from matplotlib.patches import Patch

    handles = [Patch(color=palette[i] / 255, label=name) for i, name in sorted(classes.items())][:NAMED_CLASSES]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False, fontsize=8)
    figure.tight_layout(rect=(0, 0.04 + 0.012 * (len(handles) // 6), 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return worst


def draw_pictures(
    model, dataset, settings, evaluation, rows: list, folder: Path, worst: int = 6, processor=None
) -> dict:
    """All pictures of the report into `folder`; returns {name: path}. `processor`: for a converted model's
    source protocol (see `engine.shard_predictions`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pictures = {"confusion": folder / "confusion_matrix.png", "class_iou": folder / "class_iou.png"}
    plot_confusion(evaluation.confusion, evaluation.classes, pictures["confusion"])
    plot_class_iou(rows, pictures["class_iou"])
    if worst and draw_worst_images(model, dataset, settings, evaluation.image_scores, evaluation.classes,
                                   folder / "worst_images.png", worst, processor):  # fmt: skip
        pictures["worst_images"] = folder / "worst_images.png"
    return pictures
