"""Segmentation metrics from a confusion matrix: mean IoU, per-class IoU, pixel accuracy.

The confusion matrix is a (num_labels, num_labels) integer tensor that stays on the device while it
is accumulated and is summed across processes once at the end, so the metrics are exact under any
number of processes. `compute_metrics` / `preprocess_logits_for_metrics` plug the same computation
into `transformers.Trainer`.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from .configuration_segformer import IGNORE_INDEX


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_labels: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(num_labels, num_labels) int64 counts, rows = true class, columns = predicted class. Pixels
    labelled `ignore_index` are left out; any other label outside [0, num_labels) is an error."""
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape.")
    labels = labels.long()
    valid = labels != ignore_index
    labels, predictions = labels[valid], predictions[valid].long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
        bad = labels[(labels < 0) | (labels >= num_labels)].unique().tolist()
        raise ValueError(
            f"Label values {bad} are outside [0, {num_labels}) and are not the ignore index {ignore_index}."
        )
    counts = torch.bincount(labels * num_labels + predictions, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels)


def metrics_from_confusion(confusion: torch.Tensor, id2label: dict = None) -> dict:
    """mean_iou, mean_accuracy, overall_accuracy, per-class IoU / accuracy as plain floats, and
    mean_iou_classes, the number K of classes the mIoU is the mean of: the training run's short set of
    `segformer.evaluation.metrics`, computed by it.

    IoU is TP / (TP + FP + FN), as mmseg, Cityscapes' scripts and `evaluate`'s mean_iou define it. A class
    absent from the labels has no accuracy (NaN); if it is not predicted either, it has no IoU (NaN) and
    the mIoU is over the other K classes, so a perfect prediction scores exactly 1.0. If it is predicted
    somewhere, those pixels are plain errors: its IoU is 0 and it counts."""
    from .evaluation.metrics import per_class, summary

    confusion = confusion.cpu().numpy() if isinstance(confusion, torch.Tensor) else np.asarray(confusion)
    classes, overall = per_class(confusion), summary(confusion)
    names = [str((id2label or {}).get(i, i)) for i in range(len(confusion))]
    metrics = {
        "mean_iou": overall["mIoU"],
        "mean_accuracy": overall["mAcc"],
        "overall_accuracy": overall["aAcc"],
        "mean_iou_classes": overall["mIoU_classes"],
    }
    metrics.update({f"iou_{name}": float(value) for name, value in zip(names, classes["iou"])})
    metrics.update({f"accuracy_{name}": float(value) for name, value in zip(names, classes["accuracy"])})
    return metrics


def absent_classes(metrics: dict, id2label: dict) -> list:
    """Names of the classes with no pixel in the evaluated labels (their accuracy is undefined)."""
    return [str(name) for _, name in sorted(id2label.items()) if math.isnan(metrics[f"accuracy_{name}"])]


def describe_mean_iou(metrics: dict, id2label: dict) -> str:
    """'mIoU 0.7100 over 3 of 4 classes (absent from validation: dots)': what the mean is over."""
    text = f"mIoU {metrics['mean_iou']:.4f} over {metrics['mean_iou_classes']} of {len(id2label)} classes"
    absent = absent_classes(metrics, id2label)
    if absent:
        predicted = [name for name in absent if not math.isnan(metrics[f"iou_{name}"])]
        text += f" (absent from validation: {', '.join(absent)}"
        text += f"; predicted there all the same, so IoU 0: {', '.join(predicted)})" if predicted else ")"
    return text


def upsampled_predictions(logits: torch.Tensor, size) -> torch.Tensor:
    """Class ids at the label resolution: logits are upsampled to `size` before the argmax, so the
    metrics are measured on the original labels, not on the 1/4-resolution output. One label (sigmoid):
    foreground (1) where the logit is positive, i.e. at the default threshold 0.5."""
    logits = F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def preprocess_logits_for_metrics(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For `Trainer(preprocess_logits_for_metrics=...)`: keeps class ids at the label size instead of
    accumulating every batch's full logits on the host."""
    if isinstance(logits, tuple):  # models called with return_dict=False
        logits = logits[0]
    return upsampled_predictions(logits, labels.shape[-2:])


def compute_metrics(num_labels: int, id2label: dict = None, ignore_index: int = IGNORE_INDEX):
    """A `Trainer(compute_metrics=...)` function giving mean_iou, accuracies and per-class IoU.

    Accepts either class ids (with `preprocess_logits_for_metrics`) or raw (N, C, h, w) logits, which
    it upsamples to the label size. Labels are used as they come: `do_reduce_labels` belongs to the
    dataset transform, applied once there."""

    from .data.label_map import mask_classes

    def _compute(eval_prediction) -> dict:
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        predictions, labels = torch.as_tensor(np.asarray(predictions)), torch.as_tensor(np.asarray(labels))
        # Trainer pads batches of different sizes with -100 when it concatenates them.
        labels = labels.masked_fill(labels == -100, ignore_index)
        if predictions.ndim == labels.ndim + 1:
            predictions = upsampled_predictions(predictions, labels.shape[-2:])
        # A one-label model's masks hold two classes: background and its label.
        classes = mask_classes(id2label or {i: str(i) for i in range(num_labels)})
        confusion = confusion_matrix(predictions, labels, len(classes), ignore_index)
        return metrics_from_confusion(confusion, classes if id2label else None)

    return _compute
