"""Validation: the evaluation protocol (the one the saved image processor reproduces), and mIoU from a
confusion matrix that every process accumulates over its shard and that is summed across processes, so
the metrics are exact with any number of processes."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .. import data
from ..image_processing_segformer import SegFormerImageProcessor
from ..inference import InferenceSettings, segment
from ..metrics import confusion_matrix, metrics_from_confusion
from .options import TrainingOptions


def evaluation_settings(options: TrainingOptions, processor: SegFormerImageProcessor) -> InferenceSettings:
    """The protocol the processor saved with the model records (`build_image_processor`: whole images, or
    with --eval-mode slide square windows of the crop's short side), so evaluation and `segformer predict`
    on the saved model are one protocol."""
    return InferenceSettings.from_processor(processor)


def build_eval_loader(dataset, options: TrainingOptions, accelerator) -> torch.utils.data.DataLoader:
    """Each process gets every num_processes-th sample, with no padding or repeats: Accelerate's
    even batches would repeat samples on short processes and count them twice in a summed matrix."""
    shard = torch.utils.data.Subset(dataset, range(accelerator.process_index, len(dataset), accelerator.num_processes))
    return torch.utils.data.DataLoader(
        shard, batch_size=options.eval_batch_size, num_workers=options.num_workers, collate_fn=data.pad_collate
    )


def label_maps(model, batch: dict, settings: InferenceSettings) -> list:
    """Label maps of a `pad_collate` batch, each image cropped back to its own size first (the model never
    sees the padding) and segmented as `segformer predict` and `pipeline()` segment it."""
    images = [pixels[:, :h, :w] for pixels, (h, w) in zip(batch["pixel_values"], batch["image_sizes"].tolist())]
    return segment(model, images, settings, batch_size=len(images))


def sync_buffers(model, accelerator):
    """Every process takes the main process's BatchNorm statistics, the ones that get saved: DDP
    broadcasts them before each training forward, which then updates each process's copy with its
    own batch, so after training they differ."""
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast

        for buffer in model.buffers():
            buffer.copy_(broadcast(buffer.clone(), from_process=0))


@torch.no_grad()
def evaluate(model, loader, accelerator, settings: InferenceSettings, id2label: dict) -> dict:
    """Metrics of `model` over the whole validation set."""
    model = accelerator.unwrap_model(model)  # no DDP collectives: processes may hold unequal shards
    sync_buffers(model, accelerator)
    was_training = model.training
    model.eval()
    num_labels = model.config.num_labels
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.long, device=accelerator.device)
    for batch in tqdm(loader, desc="evaluating", leave=False, disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            predictions = label_maps(model, batch, settings)
        for prediction, labels, (h, w) in zip(predictions, batch["labels"], batch["label_sizes"].tolist()):
            confusion += confusion_matrix(prediction, labels[:h, :w].to(accelerator.device), num_labels)
    confusion = accelerator.reduce(confusion, reduction="sum")
    model.train(was_training)
    return metrics_from_confusion(confusion, id2label)
