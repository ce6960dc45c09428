"""The report of an evaluation: `eval_results.json` (every number, the per-class table and the confusion
matrix), `eval_report.md` (what a person reads, linking the pictures of `plots`), and the lines printed to
the console. `segformer evaluate` and `segformer train`'s final evaluation write the same report."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from ..inference import InferenceSettings
from . import metrics as formulas
from .engine import Evaluation

RESULTS_FILE = "eval_results.json"
REPORT_FILE = "eval_report.md"


def describe_protocol(settings: InferenceSettings) -> str:
    """'whole image, short side 512 (sides a multiple of 32)', 'sliding windows of 1024 every 768, ...'."""
    size = f"short side {settings.short_side}" if settings.short_side else "image size kept"
    text = (
        f"whole image, {size}"
        if settings.window is None
        else (f"sliding windows of {settings.window} every {settings.stride or settings.window} pixels, {size}")
    )
    if settings.align > 1:
        text += f" (sides a multiple of {settings.align})"
    if not settings.single_pass:
        text += f", scales {'/'.join(f'{s:g}' for s in settings.scales)}" + (" + flip" if settings.flip else "")
    return text


def build_results(evaluation: Evaluation, *, model: str, dataset: str, split: str, settings: InferenceSettings,
                  num_images: int, label_map: dict | None = None, do_reduce_labels: bool = False) -> dict:  # fmt: skip
    """Every number of an evaluation as a JSON-ready dict (undefined values are None)."""
    confusion, classes = evaluation.confusion, evaluation.classes
    rows = formulas.class_table(confusion, classes)
    summary = {key: _number(value) for key, value in formulas.summary(confusion).items()}
    results = {
        "model": model,
        "dataset": dataset,
        "split": split,
        "num_images": num_images,
        "protocol": {**asdict(settings), "description": describe_protocol(settings)},
        "label_map": {str(k): v for k, v in (label_map or {}).items()},
        "do_reduce_labels": do_reduce_labels,
        "metrics": summary,
        "absent_classes": [row["name"] for row in rows if row["truth_pixels"] == 0],
        "absent_but_predicted": [row["name"] for row in rows if row["truth_pixels"] == 0 and row["predicted_pixels"]],
        "classes": rows,
        "confusion_matrix": confusion.tolist(),
        "image_miou": [[index, _number(score)] for index, score in evaluation.image_scores],
    }
    if evaluation.one_label:
        results["binary"] = {"threshold": evaluation.threshold, **formulas.binary(confusion)}
    return results


def _number(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def headline(results: dict) -> str:
    """'mIoU 0.7100 over 3 of 4 classes (absent from validation: dots)', with the foreground's numbers
    first for a one-label model."""
    metrics, split = results["metrics"], results["split"]
    text = f"mIoU {_fmt(metrics['mIoU'])} over {metrics['mIoU_classes']} of {len(results['classes'])} classes"
    if results["absent_classes"]:
        text += f" (absent from {split}: {', '.join(results['absent_classes'])}"
        predicted = results["absent_but_predicted"]
        text += f"; predicted there all the same, so IoU 0: {', '.join(predicted)})" if predicted else ")"
    unpredicted = metrics["mIoU_classes"] - metrics["mPrecision_classes"]
    if unpredicted > 0:  # mmseg's definition, but a reader would not guess it
        text += (f"; mPrecision and mFscore are over the {metrics['mPrecision_classes']} classes predicted "
                 f"somewhere ({unpredicted} never predicted have no precision)")  # fmt: skip
    binary = results.get("binary")
    if binary:
        foreground = ", ".join(
            f"{name} {_fmt(binary[f'foreground_{name}'])}" for name in ("iou", "dice", "precision", "recall")
        )
        text = f"foreground {foreground} at threshold {binary['threshold']:g}; two-class {text}"
    return text


def summary_table(results: dict) -> str:
    """The metrics and the per-class table as aligned text for the console."""
    metrics = results["metrics"]
    lines = ["  ".join(f"{name} {_fmt(metrics[name])}" for name in formulas.SUMMARY)]
    width = max(len("class"), *(len(row["name"]) for row in results["classes"]))
    lines.append(f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}  {'Dice':>6}  {'truth px':>10}  {'predicted px':>12}")
    for row in results["classes"]:
        cells = "  ".join(f"{_fmt(row[name]):>6}" for name in ("iou", "accuracy", "dice"))
        lines.append(f"{row['name']:<{width}}  {cells}  {row['truth_pixels']:>10}  {row['predicted_pixels']:>12}")
    return "\n".join(lines)


def markdown(results: dict, pictures: dict) -> str:
    """The Markdown report: what was evaluated and how, the summary, the binary numbers, the per-class
    table and the pictures (paths relative to the report)."""
    metrics = results["metrics"]
    parts = [
        f"# Evaluation of `{results['model']}`",
        f"Dataset `{results['dataset']}`, split `{results['split']}`, {results['num_images']} images. Protocol: "
        f"{results['protocol']['description']}. Metrics are fractions (mmsegmentation prints them x100); a class "
        "with no pixel in the truth and none predicted has no IoU and is left out of the means.",
        f"**{headline(results)}**",
    ]
    binary = results.get("binary")
    if binary:
        rows = "\n".join(
            f"| foreground {name} | {_fmt(binary[f'foreground_{name}'])} |"
            for name in ("iou", "dice", "precision", "recall")
        )
        parts.append(
            f"## Foreground (one-label model, threshold {binary['threshold']:g})\n\n| metric | value |\n|---|---:|\n{rows}"
        )
    rows = "\n".join(f"| {name} | {_fmt(metrics[name])} | {meaning} |" for name, meaning in formulas.SUMMARY.items())
    parts.append(f"## Summary\n\n| metric | value | meaning |\n|---|---:|---|\n{rows}")
    header = "| id | class | IoU | Acc | Dice | Precision | Recall | F1 | truth pixels | predicted pixels |"
    lines = [header, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["classes"]:
        cells = " | ".join(_fmt(row[name]) for name in formulas.PER_CLASS)
        lines.append(
            f"| {row['id']} | {_cell(row['name'])} | {cells} | {row['truth_pixels']} | {row['predicted_pixels']} |"
        )
    parts.append("## Per class\n\n" + "\n".join(lines))
    titles = {"confusion": "Confusion matrix", "class_iou": "IoU per class", "worst_images": "Worst images"}
    for key, title in titles.items():
        if key in pictures:
            parts.append(f"## {title}\n\n![{title}]({pictures[key]})")
    return "\n\n".join(parts) + "\n"


def _cell(value) -> str:
    return str(value).replace("|", "\\|")


def write_report(results: dict, folder, pictures: dict | None = None) -> dict:
    """Writes eval_results.json and eval_report.md into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"results": folder / RESULTS_FILE, "report": folder / REPORT_FILE}
    paths["results"].write_text(json.dumps(results, indent=1))
    relative = {key: Path(path).relative_to(folder).as_posix() for key, path in (pictures or {}).items()}
    paths["report"].write_text(markdown(results, relative))
    return paths
