"""Confusion-matrix metrics: exact values, ignore index, do_reduce_labels, the Trainer helpers."""

import math

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from segformer.image_processing_segformer import reduce_labels
from segformer.metrics import (
    absent_classes,
    compute_metrics,
    confusion_matrix,
    describe_mean_iou,
    metrics_from_confusion,
    preprocess_logits_for_metrics,
)

IGNORE = 255


def random_maps(num_labels=4, shape=(3, 17, 23), seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, shape)
    labels[rng.uniform(size=shape) < 0.1] = IGNORE
    predictions = rng.integers(0, num_labels, shape)
    return torch.from_numpy(predictions), torch.from_numpy(labels)


def test_confusion_matrix_counts_every_valid_pixel_once():
    predictions, labels = random_maps()
    confusion = confusion_matrix(predictions, labels, 4, IGNORE)
    expected = np.zeros((4, 4), np.int64)
    for p, t in zip(predictions.flatten().tolist(), labels.flatten().tolist()):
        if t != IGNORE:
            expected[t, p] += 1
    np.testing.assert_array_equal(confusion.numpy(), expected)


def test_metrics_match_the_definition():
    predictions, labels = random_maps(seed=1)
    metrics = metrics_from_confusion(confusion_matrix(predictions, labels, 4, IGNORE))
    valid = labels != IGNORE
    ious, accuracies = [], []
    for c in range(4):
        intersection = ((predictions == c) & (labels == c) & valid).sum().item()
        union = (((predictions == c) | (labels == c)) & valid).sum().item()
        ious.append(intersection / union)
        assert metrics[f"iou_{c}"] == pytest.approx(ious[-1])
        # Per-class accuracy: the share of the class's labelled pixels predicted as it (recall, as mmseg's Acc).
        accuracies.append(intersection / ((labels == c) & valid).sum().item())
        assert metrics[f"accuracy_{c}"] == pytest.approx(accuracies[-1])
    assert metrics["mean_iou"] == pytest.approx(np.mean(ious))
    assert metrics["mean_accuracy"] == pytest.approx(np.mean(accuracies))
    assert metrics["overall_accuracy"] == pytest.approx(
        ((predictions == labels) & valid).sum().item() / valid.sum().item()
    )


def raw_ade_style_mask(seed=0):
    """Ids 0..4 where 0 is 'other', as ADE20K masks."""
    return np.random.default_rng(seed).integers(0, 5, (2, 31, 29))


def test_perfect_prediction_scores_exactly_one():
    labels = torch.from_numpy(raw_ade_style_mask())
    metrics = metrics_from_confusion(confusion_matrix(labels.clone(), labels, 5, IGNORE))
    assert metrics["mean_iou"] == 1.0
    assert metrics["overall_accuracy"] == 1.0


def test_perfect_prediction_scores_exactly_one_with_reduced_labels():
    labels = torch.from_numpy(reduce_labels(raw_ade_style_mask(), IGNORE))
    assert (labels == IGNORE).any() and labels[labels != IGNORE].max() == 3
    # Whatever the model predicts on the ignored "other" pixels must not count.
    predictions = labels.masked_fill(labels == IGNORE, 2)
    metrics = metrics_from_confusion(confusion_matrix(predictions, labels, 4, IGNORE))
    assert metrics["mean_iou"] == 1.0
    assert metrics["mean_accuracy"] == 1.0


def test_absent_class_has_no_iou_and_is_left_out_of_the_mean():
    labels = torch.tensor([[0, 0, 1, 1]])
    metrics = metrics_from_confusion(confusion_matrix(labels.clone(), labels, 3), {0: "a", 1: "b", 2: "c"})
    assert math.isnan(metrics["iou_c"])
    assert metrics["mean_iou"] == 1.0


def test_label_out_of_range_is_an_error():
    labels = torch.tensor([[0, 7, IGNORE]])
    with pytest.raises(ValueError, match=r"\[7\]"):
        confusion_matrix(torch.zeros_like(labels), labels, 4, IGNORE)


def test_trainer_helpers_agree_with_and_without_preprocessing():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 8, 8)
    labels = torch.randint(0, 4, (3, 32, 32))
    labels[:, :2] = IGNORE
    from_logits = compute_metrics(4)(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
    class_ids = preprocess_logits_for_metrics(logits, labels)
    assert class_ids.shape == labels.shape
    from_ids = compute_metrics(4)(EvalPrediction(predictions=class_ids.numpy(), label_ids=labels.numpy()))
    assert from_logits == from_ids
    perfect = compute_metrics(4)(EvalPrediction(predictions=labels.numpy(), label_ids=labels.numpy()))
    assert perfect["mean_iou"] == 1.0


def test_the_mean_is_over_the_classes_with_an_iou_and_says_so():
    names = {0: "a", 1: "b", 2: "c", 3: "dots"}
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])
    # "dots" absent from the labels and never predicted: no IoU, left out; K = 3 of 4.
    metrics = metrics_from_confusion(confusion_matrix(torch.tensor([[0, 0, 1, 1, 2, 0]]), labels, 4), names)
    assert math.isnan(metrics["iou_dots"]) and math.isnan(metrics["accuracy_dots"])
    assert metrics["mean_iou_classes"] == 3
    assert metrics["mean_iou"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert absent_classes(metrics, names) == ["dots"]
    assert describe_mean_iou(metrics, names) == "mIoU 0.7222 over 3 of 4 classes (absent from validation: dots)"
    # Predicted though absent: those pixels are errors, its IoU is 0 and counts (as mmseg and Cityscapes).
    metrics = metrics_from_confusion(confusion_matrix(torch.tensor([[0, 0, 1, 1, 2, 3]]), labels, 4), names)
    assert metrics["iou_dots"] == 0.0 and metrics["mean_iou_classes"] == 4
    assert metrics["mean_iou"] == pytest.approx((1 + 1 + 1 / 2 + 0) / 4)
    assert describe_mean_iou(metrics, names) == (
        "mIoU 0.6250 over 4 of 4 classes (absent from validation: dots; predicted there all the same, so IoU 0: dots)"
    )
    full = metrics_from_confusion(confusion_matrix(labels.clone(), labels, 3), names)
    assert describe_mean_iou(full, {0: "a", 1: "b", 2: "c"}) == "mIoU 1.0000 over 3 of 3 classes"
