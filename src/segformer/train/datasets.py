"""The run's datasets: splits, class names, label map and transforms from the options, and the pass that
reads every sample before training: it checks each one and audits the masks (`data.audit`)."""

from __future__ import annotations


from tqdm.auto import tqdm

from .. import data
from ..configuration_segformer import SegFormerConfig
from ..errors import DataError
from ..image_processing_segformer import SegFormerImageProcessor
from .model import is_variant
from .options import TrainingOptions


def resolve_id2label(options: TrainingOptions, found: data.SegmentationData | None = None) -> dict:
    """--id2label, else the dataset's own (`found`: the official list, id2label.json, a ClassLabel), else
    the starting checkpoint's."""
    if options.id2label:
        return data.read_id2label(options.id2label)
    if options.dataset == data.BUILTIN_DATASET:
        return dict(data.BUILTIN_ID2LABEL)
    if found is not None and found.id2label:
        return dict(found.id2label)
    if not is_variant(options.model):
        config = SegFormerConfig.from_pretrained(options.model, revision=options.revision, token=options.token)
        # An ImageNet encoder's labels are no segmentation classes.
        if any("SemanticSegmentation" in name for name in config.architectures or []):
            return {int(i): name for i, name in config.id2label.items()}
    raise DataError(
        f"No class names found for dataset {options.dataset!r} (no official layout, id2label.json nor ClassLabel) "
        "nor in the checkpoint: give them with --id2label (a JSON file, a JSON object or 'name0,name1,...')."
    )


def labels_and_label_map(options: TrainingOptions, found: data.SegmentationData | None = None) -> tuple:
    """id2label, and the label map checked against it: --label-map, else the one the dataset's masks need
    (Cityscapes' labelIds through the official table)."""
    id2label = resolve_id2label(options, found)
    label_map = data.parse_label_map(options.label_map) if options.label_map else dict(getattr(found, "label_map", {}))
    data.check_label_map(label_map, len(data.mask_classes(id2label)), do_reduce_labels=options.do_reduce_labels)
    return id2label, label_map


def open_training_data(options: TrainingOptions) -> data.SegmentationData:
    """The dataset of the options (`data.open_dataset`)."""
    return data.open_dataset(
        options.dataset,
        dataset_format=options.dataset_format,
        config_name=options.dataset_config,
        image_column=options.image_column,
        label_column=options.label_column,
        streaming=options.streaming,
        seed=options.seed,
    )


def build_datasets(
    options: TrainingOptions, processor: SegFormerImageProcessor, accelerator=None, found: data.SegmentationData = None
) -> tuple:
    """(train, validation) datasets and id2label of `found` (default: `open_training_data(options)`); images
    normalised as `processor` does. With --streaming the training split is a `StreamingSegmentation` (this
    process's part of the stream) and the validation split the first --max-eval-samples of its stream, in
    memory."""
    # Class names given with --id2label (or the built-in set's) are known before the data is loaded, which
    # takes minutes for a Hub dataset: a --label-map they rule out fails first.
    if options.id2label or options.dataset == data.BUILTIN_DATASET:
        labels_and_label_map(options)
    found = found or open_training_data(options)
    train_split, eval_split = data.train_and_eval(
        found, options.train_split, options.eval_split, options.validation_fraction, options.seed
    )
    columns = (found.image_column, found.label_column)
    if options.streaming:
        eval_split = data.take(eval_split, options.max_eval_samples, columns)
        if options.max_train_samples:
            train_split = train_split.take(options.max_train_samples)
    else:
        if options.max_train_samples:
            train_split = train_split.select(range(min(options.max_train_samples, len(train_split))))
        if options.max_eval_samples:
            eval_split = eval_split.select(range(min(options.max_eval_samples, len(eval_split))))
    id2label, label_map = labels_and_label_map(options, found)
    norm = dict(mean=tuple(processor.image_mean), std=tuple(processor.image_std))
    train_transform = data.TrainTransform(
        crop_size=tuple(options.crop_size),
        scale=tuple(options.scale),
        ratio_range=tuple(options.ratio_range),
        cat_max_ratio=options.cat_max_ratio,
        flip_prob=options.flip_prob,
        photometric=options.photometric,
        **norm,
    )
    common = dict(
        num_labels=len(data.mask_classes(id2label)),  # a one-label model's masks hold 0 and 1
        image_column=found.image_column,
        label_column=found.label_column,
        do_reduce_labels=options.do_reduce_labels,
        label_map=label_map,
        seed=options.seed,
    )
    train_name, eval_name = found.split_name(options.train_split), _eval_name(found, options.eval_split)
    if options.streaming:
        rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
        train = data.StreamingSegmentation(train_split, train_transform, split=train_name, rank=rank, world_size=world,
                                           buffer_size=options.shuffle_buffer, **common)  # fmt: skip
    else:
        train = data.SegmentationDataset(train_split, train_transform, split=train_name, **common)
    evaluation = data.SegmentationDataset(eval_split, data.EvalTransform(**norm), split=eval_name, **common)
    return train, evaluation, id2label


def _eval_name(found: data.SegmentationData, eval_split: str) -> str:
    return found.split_name(eval_split) if found.has_split(eval_split) else f"{eval_split} (held out)"


def check_samples(dataset, accelerator, stream_samples: int | None = None) -> data.SplitAudit:
    """Reads every sample once (each process its share) so bad data fails before training starts, and
    audits the masks on the way; the audit is merged across processes, the same on each. A stream is
    audited on its first `stream_samples` samples (each process its part), not all of it."""
    audit = data.SplitAudit(dataset.split, dataset.num_labels, dataset.ignore_index)
    show = dict(desc=f"checking {dataset.split}", disable=not accelerator.is_local_main_process)
    if isinstance(dataset, data.StreamingSegmentation):
        count = -(-stream_samples // accelerator.num_processes)
        for stored, label in tqdm(dataset.first_samples(count), total=count, **show):
            audit.add(stored, label)
    else:
        for index in tqdm(range(accelerator.process_index, len(dataset), accelerator.num_processes), **show):
            _, stored, label = dataset.load_sample(index)
            audit.add(stored, label)
    return data.reduce_audit(audit, accelerator)


def audit_datasets(train, evaluation, accelerator, eval_only: bool = False, stream_samples: int | None = None) -> dict:
    """{"train": audit, "validation": audit} of the checked splits (no training split with eval_only)."""
    audits = {} if eval_only else {"train": check_samples(train, accelerator, stream_samples)}
    audits["validation"] = check_samples(evaluation, accelerator)
    return audits
