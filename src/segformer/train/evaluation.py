"""Validation during training: the evaluation protocol (the one the saved image processor reproduces) and
the loader of the validation split; the loop itself is `segformer.evaluation.engine`, the one that
`segformer evaluate` runs, so both give the same numbers for the same model and protocol."""

from __future__ import annotations

import torch

from ..evaluation.engine import Evaluation, build_loader, label_maps
from ..evaluation.engine import evaluate as evaluate_model
from ..image_processing_segformer import SegFormerImageProcessor
from ..inference import InferenceSettings
from ..metrics import metrics_from_confusion
from .options import TrainingOptions

__all__ = ["build_eval_loader", "evaluate", "evaluation_metrics", "evaluation_settings", "label_maps"]


def evaluation_settings(options: TrainingOptions, processor: SegFormerImageProcessor) -> InferenceSettings:
    """The protocol the processor saved with the model records (`build_image_processor`: whole images, or
    with --eval-mode slide square windows of the crop's short side), so evaluation and `segformer predict`
    on the saved model are one protocol."""
    return InferenceSettings.from_processor(processor)


def build_eval_loader(dataset, options: TrainingOptions, accelerator) -> torch.utils.data.DataLoader:
    """The validation split, sharded across processes without repeats (`engine.build_loader`)."""
    return build_loader(dataset, accelerator, options.eval_batch_size, options.num_workers)


def evaluation_metrics(evaluation: Evaluation) -> dict:
    """The short set a training run logs and keeps the best model by (mean_iou, accuracies, per class)."""
    return metrics_from_confusion(evaluation.confusion, evaluation.classes)


def evaluate(model, loader, accelerator, settings: InferenceSettings, id2label: dict, per_image: bool = False) -> Evaluation:
    """The model's `Evaluation` over the whole validation set (see `engine.evaluate`)."""
    return evaluate_model(model, loader, accelerator, settings, id2label, per_image=per_image)
