"""A whole run: set up Accelerate, data, model and processor from the options, train (or only
evaluate), then write the results."""

from __future__ import annotations

import argparse

import torch

from .. import data
from ..files import make_output_dir
from ..metrics import absent_classes, describe_mean_iou
from .checkpoints import check_steps_left, checkpoint_path, checkpoint_step
from .datasets import audit_datasets, build_datasets, open_training_data
from .evaluation import build_eval_loader, evaluate, evaluation_metrics, evaluation_settings
from .loop import tracker_config, train
from .model import build_image_processor, build_model, use_image_statistics
from .options import TrainingOptions, options_from_args
from .reporting import finish, report_dataset


def build_accelerator(options, folder):
    """The Accelerator of a run (`segformer train` and `pretrain`): mixed precision, gradient accumulation,
    trackers logging into OUTPUT_DIR/logs, and a seeded sampler so that a resumed run draws the same order."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    return Accelerator(
        mixed_precision=options.mixed_precision,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        log_with=None if options.report_to == "none" else options.report_to,
        project_dir=str(folder / "logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=options.seed),
    )


def run(options: TrainingOptions) -> dict:
    """Trains (or only evaluates) as the options say; returns what `all_results.json` holds."""
    from accelerate.utils import set_seed

    if options.num_threads:
        torch.set_num_threads(options.num_threads)
    folder = make_output_dir(options.output_dir)
    data.dataset_source(options.dataset)  # a dataset folder that is not there fails before any download
    if options.resume:  # a wrong --resume fails now, not after the data checks
        resumed = checkpoint_path(folder, options.resume)
        if not options.num_epochs and not options.eval_only:
            check_steps_left(checkpoint_step(resumed), options.max_steps, options.resume)
    report_to = None if options.report_to == "none" else options.report_to
    accelerator = build_accelerator(options, folder)
    set_seed(options.seed)
    processor = build_image_processor(options)
    settings = evaluation_settings(options, processor)
    found = open_training_data(options)
    train_data, eval_data, id2label = build_datasets(options, processor, accelerator, found)
    accelerator.print(f"Dataset {found.source} ({found.form}): " + "; ".join(found.notes) + ".")
    if options.check_data:
        # Recomputed on --resume too: reading every sample is the check, and the same data gives the same audit.
        audits = audit_datasets(train_data, eval_data, accelerator, options.eval_only, options.audit_samples)
        if options.streaming and not options.eval_only:
            accelerator.print(f"Note: a stream is audited on its first {audits['train'].num_images} training samples "
                              "(--audit-samples), not all of them.")  # fmt: skip
        classes = data.mask_classes(id2label)  # a one-label model's masks: background and its label
        report_dataset(accelerator, audits, classes, folder, label_map=train_data.label_map,
                       do_reduce_labels=options.do_reduce_labels)  # fmt: skip
        warnings = data.check_audits(
            audits, classes, label_map=train_data.label_map, allow_missing_classes=options.allow_missing_classes
        )
        for warning in warnings:
            accelerator.print(f"Warning: {warning}")
    if options.image_stats == "auto":
        use_image_statistics(processor, [train_data, eval_data], accelerator, accelerator.print)
    train_audit = audits.get("train") if options.check_data else None
    auto_class_weights = train_audit.class_weights() if train_audit else None  # for --class-weights auto
    model = build_model(options, id2label, accelerator.print, auto_class_weights=auto_class_weights)
    processor.threshold = model.config.threshold  # pipeline() reads a one-label model's threshold there
    if found.palette is not None and len(found.palette) == len(id2label):
        model.config.palette = found.palette  # the dataset's class colours: predict, the app and the Space show them
    eval_loader = build_eval_loader(eval_data, options, accelerator)
    if report_to:
        accelerator.init_trackers("segformer", config=tracker_config(options))
    if options.eval_only:
        model = accelerator.prepare(model)
        evaluation = evaluate(model, eval_loader, accelerator, settings, id2label, per_image=True)
        state = {"step": 0, "history": {"loss": [], "mean_iou": []}}
    else:
        evaluation, state, model = train(accelerator, model, processor, train_data, eval_loader, settings, options, id2label)
    metrics = evaluation_metrics(evaluation)
    results = {f"eval_{k}": v for k, v in metrics.items()}
    results.update({k: v for k, v in state.items() if k not in ("history", "stream")})
    results["eval_samples"] = len(eval_data)
    results["eval_absent_classes"] = absent_classes(metrics, evaluation.classes)
    accelerator.print(
        f"Validation {describe_mean_iou(metrics, evaluation.classes)} (pixel accuracy {metrics['overall_accuracy']:.4f}) "
        f"on {len(eval_data)} images; wrote the model to {folder / 'model'} and the results to {folder}"
    )
    if settings.window is not None:
        accelerator.print(
            f"Note: evaluated in {settings.window}-pixel sliding windows every {settings.stride} pixels; the saved image "
            "processor records them, so `segformer predict` reproduces the evaluation; pipeline() runs whole images."
        )
    finish(accelerator, model, processor, options, eval_data, settings, evaluation, results, state["history"])
    accelerator.end_training()
    return results


def main(args: argparse.Namespace):
    """The `segformer train` command (a console script must not return the results)."""
    run(options_from_args(args))
