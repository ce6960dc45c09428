"""Accuracy of the inference modes on a trained model: the built-in model (`segformer train` with no options:
B0 on the generated dataset), trained once and cached, evaluated on its validation split exactly as training
evaluates it (its processor's protocol, `segformer.inference.segment`).

For every mode: the share of validation pixels whose label agrees with fp32, and the mIoU change against
fp32. A mode below MIN_AGREEMENT or losing more than MAX_MIOU_DROP is flagged.
"""

import contextlib
import io
import os
from pathlib import Path


from segformer import SegFormerForSemanticSegmentation, SegFormerImageProcessor
from segformer.inference import InferenceSettings, segment
from segformer.metrics import confusion_matrix, metrics_from_confusion

MIN_AGREEMENT = 0.99
MAX_MIOU_DROP = 0.005  # 0.5 mIoU point
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "segformer" / "benchmark-builtin-b0"


def trained_model(cache: Path = DEFAULT_CACHE, log=print):
    """(model, processor) of the built-in run, trained into `cache` unless a previous run left it there."""
    from segformer.train import options as training_options
    from segformer.train.run import run

    folder = cache / "model"
    if not (folder / "config.json").is_file():
        log(f"Training the built-in model into {cache} (once; about two minutes on two cores)...")
        with contextlib.redirect_stdout(io.StringIO()):
            run(training_options.parse_options(["--output-dir", str(cache), "--report-to", "none"]))
    model = SegFormerForSemanticSegmentation.from_pretrained(folder).eval()
    return model, SegFormerImageProcessor.from_pretrained(folder)


def validation_set(processor) -> list:
    """[(normalised (C, H, W) image at its own size, (H, W) label tensor)] of the built-in validation split."""
    from segformer.train.datasets import build_datasets
    from segformer.train.options import parse_options

    _, evaluation, _ = build_datasets(parse_options([]), processor)
    samples = []
    for index in range(len(evaluation)):
        sample = evaluation[index]  # the evaluation transform keeps the image size: no padding to remove
        samples.append((sample["pixel_values"], sample["labels"]))
    return samples


def label_maps(model, samples: list, settings: InferenceSettings) -> list:
    return [label_map.cpu() for label_map in segment(model, [image for image, _ in samples], settings)]


def mean_iou(predictions: list, samples: list, num_labels: int) -> float:
    confusion = sum(confusion_matrix(p, labels, num_labels) for p, (_, labels) in zip(predictions, samples))
    return metrics_from_confusion(confusion)["mean_iou"]


def agreement(predictions: list, reference: list) -> float:
    same = sum((p == r).sum().item() for p, r in zip(predictions, reference))
    return same / sum(r.numel() for r in reference)


def flag(agree: float, miou_change: float) -> str:
    reasons = []
    if agree < MIN_AGREEMENT:
        reasons.append(f"agreement < {100 * MIN_AGREEMENT:g}%")
    if miou_change < -MAX_MIOU_DROP:
        reasons.append(f"mIoU -{100 * MAX_MIOU_DROP:g} pt")
    return "FLAGGED: " + ", ".join(reasons) if reasons else "ok"
