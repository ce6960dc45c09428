"""A whole pretraining run: options -> checked data, model and processor -> training -> results."""

from __future__ import annotations

import argparse

import torch

from .. import data as segdata
from ..files import make_output_dir
from ..train.checkpoints import check_steps_left, checkpoint_path, checkpoint_step
from ..train.loop import tracker_config
from ..train.run import build_accelerator
from .augment import TrainAugmentation
from .data import ClassificationDataset, open_classification_data
from .loop import train
from .model import build_image_processor, build_model, check_model_option
from .options import PretrainOptions, options_from_args
from .reporting import finish, recipe


def run(options: PretrainOptions) -> dict:
    """Pretrains as the options say; returns what `all_results.json` holds."""
    from accelerate.utils import set_seed

    if options.num_threads:
        torch.set_num_threads(options.num_threads)
    check_model_option(options.model)  # a wrong --model fails before the data is read
    folder = make_output_dir(options.output_dir)
    segdata.dataset_source(options.dataset)  # a dataset folder that is not there fails before any download
    if options.resume:
        resumed = checkpoint_path(folder, options.resume)
        if options.max_steps:
            check_steps_left(checkpoint_step(resumed), options.max_steps, options.resume)
    accelerator = build_accelerator(options, folder)
    set_seed(options.seed)
    processor = build_image_processor(options)
    found = open_classification_data(options, accelerator.print)
    accelerator.print(f"Dataset {found.source} ({found.form}): " + "; ".join(found.notes) + ".")
    model = build_model(options, found.id2label, accelerator.print)
    columns = (found.image_column, found.label_column)
    train_data = ClassificationDataset(found.train, *columns, processor, TrainAugmentation(options, options.seed))
    eval_data = ClassificationDataset(found.eval, *columns, processor)
    if len(found.id2label) <= 5:
        accelerator.print(f"Note: {len(found.id2label)} classes: top-5 accuracy counts every class and is 1 by construction.")
    if options.report_to != "none":
        accelerator.init_trackers("segformer-pretrain", config=tracker_config(options))
    evaluation, ema_evaluation, state, model, ema = train(accelerator, model, train_data, eval_data, options, len(found.id2label))
    results = {f"eval_{key}": value for key, value in evaluation.items()}
    if ema_evaluation is not None:
        results.update({f"eval_ema_{key}": value for key, value in ema_evaluation.items()})
    results.update({key: value for key, value in state.items() if key != "history"})
    results.update(eval_samples=len(eval_data), train_samples=len(train_data), num_classes=len(found.id2label))
    accelerator.print(
        f"Validation top-1 {results['eval_top1']:.4f}, top-5 {results['eval_top5']:.4f} on {len(eval_data)} images "
        f"({len(found.id2label)} classes, chance {1 / len(found.id2label):.4f}); wrote the model to "
        f"{folder / 'model'} and the results to {folder}"
    )
    dataset_name = found.card_name or options.dataset
    hyperparameters = recipe(options, state["learning_rate"], state["max_steps"], state["warmup_steps"])
    finish(accelerator, model, ema, processor, options, dataset_name, results, state["history"], hyperparameters)
    accelerator.end_training()
    return results


def main(args: argparse.Namespace):
    """The `segformer pretrain` command (a console script must not return the results)."""
    run(options_from_args(args))
