"""Evaluate a model on a segmentation dataset: the numbers people compare, and reports people read.

MODEL is a model folder or Hub id (converted ones too); without it, the built-in training run's model
(outputs/train/model, what `segformer train` with no flags writes). --dataset is anything `segformer train`
reads (a local folder, a Hub dataset id, 'builtin'); without it, the built-in dataset's validation split.
So the bare command evaluates the built-in run and prints the mIoU that `segformer train` printed.

Metrics: mmsegmentation's aAcc, mIoU, mAcc, mDice, mFscore, mPrecision, mRecall and the frequency-weighted
IoU, per class IoU, accuracy, Dice and pixels in truth and prediction; for a one-label (sigmoid) model the
foreground's IoU, Dice, precision and recall first. It writes into --output-dir:

  eval_results.json   every number, the per-class table, the confusion matrix, each image's mIoU
  eval_report.md      the report, with the pictures below
  confusion_matrix.png, class_iou.png, worst_images.png

The protocol is the model's image processor (what `pipeline()` runs) unless --protocol and friends say
otherwise. Under `accelerate launch` every process evaluates its share; the confusion matrices are summed,
so the numbers equal one process's. --push-to-hub puts the results into the model-index of a Hub repo's
card (or a local model folder's) without touching the weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import cli, data
from ..errors import InputError, OptionError

DEFAULT_MODEL = Path("outputs/train/model")
THRESHOLD_AUTO = "auto"


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument(
        "model", nargs="?", help=f"Model folder or Hub repo id (default: {DEFAULT_MODEL}, the built-in training run's)."
    )
    parser.add_argument(
        "--dataset",
        default=data.BUILTIN_DATASET,
        help="Local folder, Hub dataset id or 'builtin' (the generated textures dataset).",
    )
    parser.add_argument("--dataset-config", help="Configuration name of the Hub dataset (default: none).")
    parser.add_argument("--split", default="validation", help="Split to evaluate.")
    parser.add_argument("--image-column", default="image", help="Column holding the images.")
    parser.add_argument("--label-column", default="label", help="Column holding the masks.")
    parser.add_argument(
        "--id2label",
        help="The dataset's class names, as in `segformer train`; they must be as many as the model's (default: the model's).",
    )
    parser.add_argument(
        "--label-map",
        metavar="MAP",
        help="Remap mask values as stored, as in `segformer train` (e.g. 255:1) (default: none).",
    )
    parser.add_argument(
        "--do-reduce-labels",
        action=argparse.BooleanOptionalAction,
        help="Masks use 0 for 'other' (ADE20K) (default: the model's image processor's).",
    )
    parser.add_argument(
        "--allow-missing-classes",
        action="store_true",
        help="Evaluate masks that look like 0/255 binary masks with 255 ignored.",
    )
    parser.add_argument("--max-samples", type=int, help="Evaluate only the first N images (default: all).")
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the built-in dataset (as `segformer train --seed`)."
    )
    parser.add_argument(
        "--threshold",
        help="One-label models: foreground probability threshold, or 'auto' for the best-IoU one on the split (default: the model config's).",
    )
    parser.add_argument(
        "--save-threshold",
        action="store_true",
        help="Store the threshold used (e.g. found by --threshold auto) in the local model folder's config and image processor.",
    )
    cli.add_protocol_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="Images per batch and process.")
    parser.add_argument("--num-workers", type=int, default=0, help="Data-loading worker processes.")
    parser.add_argument(
        "--worst-images", type=int, default=6, help="Images in the gallery of the lowest mIoU (0: none)."
    )
    cli.add_output_dir(parser, "outputs/evaluate", "for the report")
    cli.add_device(parser)
    cli.add_model_download(parser)
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="Put the results into the card of this Hub model repository, or of this local model folder (default: none).",
    )


def resolve_model(model: str | None) -> str:
    """MODEL, or the built-in training run's model folder where it exists."""
    if model:
        return model
    if (DEFAULT_MODEL / "config.json").is_file():
        return str(DEFAULT_MODEL)
    raise InputError(
        f"no MODEL given and there is no {DEFAULT_MODEL} (the built-in training run's model): run `segformer train` "
        "first, or name a model folder or Hub id."
    )


def parse_threshold(value: str | None) -> float | str | None:
    if value is None or value == THRESHOLD_AUTO:
        return value
    try:
        threshold = float(value)
    except ValueError:
        threshold = None
    if threshold is None or not 0 < threshold < 1:
        raise OptionError(f"--threshold takes a probability in (0, 1) or 'auto', got {value!r}.")
    return threshold


def check_options(args: argparse.Namespace, model_name: str) -> float | str | None:
    """The option errors that need no model or data; returns the parsed --threshold."""
    for name in ("batch_size", "max_samples", "worst_images", "num_workers"):
        value = getattr(args, name)
        minimum = 0 if name in ("worst_images", "num_workers") else 1
        if value is not None and value < minimum:
            raise OptionError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}.")
    threshold = parse_threshold(args.threshold)
    if args.save_threshold and not Path(model_name).is_dir():
        raise OptionError(f"--save-threshold writes into a local model folder; {model_name!r} is not one.")
    data.parse_label_map(args.label_map)
    return threshold


def main(args: argparse.Namespace):
    from .run import run_evaluation

    model_name = resolve_model(args.model)
    threshold = check_options(args, model_name)
    run_evaluation(args, model_name, threshold)
