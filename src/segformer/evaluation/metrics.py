"""The metrics people compare, from one integer confusion matrix: mmsegmentation's set (aAcc, mIoU, mAcc,
mDice, mFscore, mPrecision, mRecall), frequency-weighted IoU, a per-class table, and for one-label
(sigmoid) models the foreground's IoU, Dice, precision and recall and the best-IoU threshold.

Definitions, per class c with TP the diagonal, `truth` its row sum and `predicted` its column sum (mmseg's
`mmseg/evaluation/metrics/iou_metric.py`):

    IoU = TP / (truth + predicted - TP)      Acc = Recall = TP / truth      Precision = TP / predicted
    Dice = 2 TP / (truth + predicted)        Fscore = 2 Precision Recall / (Precision + Recall)

A ratio whose denominator is 0 is undefined (NaN) and left out of the mean, as mmseg's nanmean does: a class
absent from the truth has no accuracy or recall; absent from both truth and prediction, no IoU or Dice
either; never predicted, no precision. So a perfect prediction scores exactly 1. A class absent from the
truth but predicted somewhere gets IoU 0 and counts: those pixels are plain errors.

    aAcc = sum TP / sum truth       fwIoU = sum_c (truth_c / sum truth) IoU_c   (classes in the truth)
"""

from __future__ import annotations

import math

import numpy as np

# name in the results -> (mmseg's name, what it is); the order of the summary table.
SUMMARY = {
    "aAcc": "pixel accuracy over all labelled pixels",
    "mIoU": "mean intersection over union",
    "mAcc": "mean per-class accuracy (recall)",
    "mDice": "mean Dice coefficient",
    "mFscore": "mean F1 score",
    "mPrecision": "mean precision",
    "mRecall": "mean recall",
    "fwIoU": "IoU weighted by each class's share of the truth pixels",
}
PER_CLASS = ("iou", "accuracy", "dice", "precision", "recall", "fscore")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else math.nan


def per_class(confusion) -> dict:
    """{metric: float64 array over classes} plus `truth_pixels` and `predicted_pixels` (int arrays)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    true_positive = np.diag(confusion).astype(np.float64)
    truth = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision, recall = _ratio(true_positive, predicted), _ratio(true_positive, truth)
    return {
        "iou": _ratio(true_positive, truth + predicted - true_positive),
        "accuracy": recall,
        "dice": _ratio(2 * true_positive, truth + predicted),
        "precision": precision,
        "recall": recall,
        "fscore": _ratio(2 * precision * recall, precision + recall),
        "truth_pixels": truth,
        "predicted_pixels": predicted,
    }


def summary(confusion) -> dict:
    """aAcc, mIoU, mAcc, mDice, mFscore, mPrecision, mRecall, fwIoU as plain floats (fractions, not %),
    `mIoU_classes`, the number K of classes the mIoU is the mean of, and `mPrecision_classes`, the
    number of classes predicted somewhere, which mPrecision and mFscore are the means over."""
    classes = per_class(confusion)
    truth = classes["truth_pixels"]
    total = truth.sum()
    present = truth > 0
    weighted = classes["iou"][present] * truth[present] / total if total else np.array([])
    return {
        "aAcc": float(np.diag(np.asarray(confusion)).sum() / total) if total else math.nan,
        "mIoU": _nanmean(classes["iou"]),
        "mAcc": _nanmean(classes["accuracy"]),
        "mDice": _nanmean(classes["dice"]),
        "mFscore": _nanmean(classes["fscore"]),
        "mPrecision": _nanmean(classes["precision"]),
        "mRecall": _nanmean(classes["recall"]),
        "fwIoU": float(weighted.sum()) if total else math.nan,
        "mIoU_classes": int((~np.isnan(classes["iou"])).sum()),
        "mPrecision_classes": int((~np.isnan(classes["precision"])).sum()),
    }


def class_table(confusion, id2label: dict) -> list:
    """One row per class: id, name, the per-class metrics (None where undefined) and its pixels in the
    truth and in the prediction."""
    classes = per_class(confusion)
    rows = []
    for index in range(len(classes["iou"])):
        row = {"id": index, "name": str(id2label.get(index, index))}
        row.update({name: _number(classes[name][index]) for name in PER_CLASS})
        row.update(
            truth_pixels=int(classes["truth_pixels"][index]), predicted_pixels=int(classes["predicted_pixels"][index])
        )
        rows.append(row)
    return rows


def binary(confusion) -> dict:
    """A one-label model's numbers, over {0: background, 1: foreground}: the foreground's IoU, Dice,
    precision and recall (None where undefined, e.g. precision when nothing is predicted foreground)."""
    classes = per_class(confusion)
    return {f"foreground_{name}": _number(classes[name][1]) for name in ("iou", "dice", "precision", "recall")}


def image_mean_iou(confusion) -> float:
    """The mIoU of one image: over the classes in its truth or its prediction (NaN with no labelled pixel)."""
    return _nanmean(per_class(confusion)["iou"])


def best_threshold(foreground: np.ndarray, background: np.ndarray, thresholds: np.ndarray) -> tuple:
    """(threshold, foreground IoU) of the threshold with the best foreground IoU.

    `foreground[k]` / `background[k]` count the truth-foreground / truth-background pixels whose predicted
    probability is above `thresholds[k - 1]` and at most `thresholds[k]` (bin 0: at most thresholds[0], the
    last bin: above the last threshold), so at `thresholds[k]` the pixels predicted foreground are those of
    bins k+1 and up. Ties go to the threshold closest to 0.5."""
    true_positive = np.cumsum(foreground[::-1])[::-1][1:]  # predicted foreground at each threshold
    false_positive = np.cumsum(background[::-1])[::-1][1:]
    union = foreground.sum() + false_positive
    iou = _ratio(true_positive.astype(np.float64), union.astype(np.float64))
    if np.isnan(iou).all():
        return 0.5, math.nan
    best = np.nanmax(iou)
    candidates = np.flatnonzero(iou == best)
    index = candidates[np.argmin(np.abs(thresholds[candidates] - 0.5))]
    return float(thresholds[index]), float(best)


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
