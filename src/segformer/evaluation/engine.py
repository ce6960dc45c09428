"""The evaluation loop that `segformer evaluate` and `segformer train` share: label maps from the one
inference path (`segformer.inference.segment`, what `segformer predict` and `pipeline()` run), one integer
confusion matrix per process summed across processes at the end, so any number of processes gives exactly
the numbers of one; and the mIoU of every image, for the gallery of the worst ones.

A one-label (sigmoid) model is scored over its masks' two classes, background (0) and foreground (1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import data
from ..inference import InferenceSettings, foreground_threshold, segment, segment_images, segment_probabilities
from ..metrics import confusion_matrix
from .metrics import image_mean_iou


@dataclass
class Evaluation:
    """What one evaluation pass measured: the summed confusion matrix (rows: truth, columns: prediction)
    over `classes` (id -> name, the masks' classes), whether the model has one label (sigmoid), the
    one-label threshold used, and (dataset index, mIoU) of every image."""

    confusion: np.ndarray
    classes: dict
    one_label: bool = False
    threshold: float | None = None
    image_scores: list = field(default_factory=list)


def build_loader(dataset, accelerator, batch_size: int = 1, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Each process gets every num_processes-th sample, with no padding or repeats: Accelerate's even
    batches would repeat samples on short processes and count them twice in a summed matrix."""
    shard = torch.utils.data.Subset(dataset, range(accelerator.process_index, len(dataset), accelerator.num_processes))
    collate = partial(data.pad_collate, ignore_index=dataset.ignore_index)
    return torch.utils.data.DataLoader(shard, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)


def batch_images(batch: dict) -> list:
    """The normalised images of a `pad_collate` batch, each cropped back to its own size (the model never
    sees the padding)."""
    return [pixels[:, :h, :w] for pixels, (h, w) in zip(batch["pixel_values"], batch["image_sizes"].tolist())]


def batch_labels(batch: dict) -> list:
    return [labels[:h, :w] for labels, (h, w) in zip(batch["labels"], batch["label_sizes"].tolist())]


def label_maps(model, batch: dict, settings: InferenceSettings) -> list:
    """Label maps of a `pad_collate` batch, segmented as `segformer predict` and `pipeline()` segment them."""
    images = batch_images(batch)
    return segment(model, images, settings, batch_size=len(images))


def sync_buffers(model, accelerator):
    """Every process takes the main process's BatchNorm statistics, the ones that get saved: DDP
    broadcasts them before each training forward, which then updates each process's copy with its
    own batch, so after training they differ."""
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast

        for buffer in model.buffers():
            buffer.copy_(broadcast(buffer.clone(), from_process=0))


def _shard_indices(loader) -> list:
    dataset = loader.dataset
    return list(dataset.indices) if isinstance(dataset, torch.utils.data.Subset) else list(range(len(dataset)))


def shard_predictions(model, loader, settings: InferenceSettings, processor=None):
    """(dataset index, label map, truth) of every sample of the loader's shard, in order. The package's own
    protocol runs on the loader's normalised batches; a converted model's source protocol (mmseg, NVlabs,
    transformers: `settings.resize_protocol`) resizes the image as stored, so it runs on each image as read,
    through `segment_images` with `processor`, as `segformer predict` and `pipeline()` run it."""
    indices = _shard_indices(loader)
    if settings.resize_protocol != "segformer" and processor is not None:
        dataset = loader.dataset.dataset if isinstance(loader.dataset, torch.utils.data.Subset) else loader.dataset
        for index in indices:
            image, label = dataset.load_pair(index)
            prediction = torch.from_numpy(segment_images(model, processor, [image], settings)[0])
            yield index, prediction, torch.from_numpy(label)
        return
    indices = iter(indices)
    for batch in loader:
        for prediction, labels in zip(label_maps(model, batch, settings), batch_labels(batch)):
            yield next(indices), prediction, labels


@torch.no_grad()
def predict_sample(model, dataset, index: int, settings: InferenceSettings, processor=None) -> np.ndarray:
    """The label map of one sample of a `SegmentationDataset`, as `shard_predictions` makes it."""
    if settings.resize_protocol != "segformer" and processor is not None:
        return segment_images(model, processor, [dataset.load_pair(index)[0]], settings)[0]
    batch = data.pad_collate([dataset[index]], dataset.ignore_index)
    return label_maps(model, batch, settings)[0].cpu().numpy()


@torch.no_grad()
def evaluate(
    model, loader, accelerator, settings: InferenceSettings, id2label: dict, per_image: bool = False, processor=None
) -> Evaluation:
    """The model's confusion matrix over the loader's dataset (every process its shard, summed); with
    `per_image`, each image's mIoU too (gathered on every process). `processor`: the model's image
    processor, needed for a converted model's source protocol (see `shard_predictions`)."""
    model = accelerator.unwrap_model(model)  # no DDP collectives: processes may hold unequal shards
    sync_buffers(model, accelerator)
    was_training = model.training
    model.eval()
    classes = data.mask_classes(id2label)
    size, ignore_index = len(classes), model.config.semantic_loss_ignore_index
    confusion = torch.zeros(size, size, dtype=torch.long, device=accelerator.device)
    scores = []
    predictions = shard_predictions(model, loader, settings, processor)
    progress = tqdm(predictions, total=len(loader.dataset), desc="evaluating", leave=False,
                    disable=not accelerator.is_local_main_process)  # fmt: skip
    with accelerator.autocast():
        for index, prediction, labels in progress:
            image_confusion = confusion_matrix(prediction, labels.to(prediction.device), size, ignore_index)
            confusion += image_confusion.to(confusion.device)
            if per_image:
                scores.append((index, image_mean_iou(image_confusion.cpu().numpy())))
    confusion = accelerator.reduce(confusion, reduction="sum")
    if per_image and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        scores = gather_object(scores)
    model.train(was_training)
    one_label = model.config.num_labels == 1
    threshold = foreground_threshold(model, settings) if one_label else None
    return Evaluation(confusion.cpu().numpy(), classes, one_label, threshold, sorted(scores))


# Candidate thresholds of `--threshold auto`: 0.01 .. 0.99 in steps of 0.01.
THRESHOLDS = np.round(np.arange(1, 100) / 100, 2)


@torch.no_grad()
def foreground_histograms(model, loader, accelerator, settings: InferenceSettings, thresholds=THRESHOLDS) -> tuple:
    """(foreground, background): for the truth-foreground and truth-background pixels of a one-label
    model, how many have their foreground probability in each bin between `thresholds` (see
    `metrics.best_threshold`), summed across processes. The probabilities are those the label maps
    threshold (`segment_probabilities`: the same passes, resized to the image)."""
    model = accelerator.unwrap_model(model)
    model.eval()
    boundaries = torch.tensor(thresholds, dtype=torch.float32, device=accelerator.device)
    counts = torch.zeros(2, len(thresholds) + 1, dtype=torch.long, device=accelerator.device)
    for batch in tqdm(loader, desc="threshold search", leave=False, disable=not accelerator.is_local_main_process):
        for image, labels in zip(batch_images(batch), batch_labels(batch)):
            with accelerator.autocast():
                probability = segment_probabilities(model, image[None].to(accelerator.device), settings)[0, 1]
            labels = labels.to(accelerator.device)
            bins = torch.bucketize(probability.float(), boundaries)
            for row, truth in enumerate((1, 0)):
                counts[row] += torch.bincount(bins[labels == truth], minlength=len(thresholds) + 1)
    counts = accelerator.reduce(counts, reduction="sum").cpu().numpy()
    return counts[0], counts[1]
