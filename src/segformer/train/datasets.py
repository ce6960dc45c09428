"""The run's datasets: splits, class names, label map and transforms from the options, and the pass that
reads every sample before training: it checks each one and audits the masks (`data.audit`)."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from .. import data
from ..configuration_segformer import SegFormerConfig
from ..errors import DataError
from ..image_processing_segformer import SegFormerImageProcessor
from .model import is_variant
from .options import TrainingOptions


def resolve_id2label(options: TrainingOptions) -> dict:
    """--id2label, else the dataset's own, else the starting checkpoint's."""
    if options.id2label:
        return data.read_id2label(options.id2label)
    if options.dataset == data.BUILTIN_DATASET:
        return dict(data.BUILTIN_ID2LABEL)
    if Path(options.dataset).is_dir():
        found = next(Path(options.dataset).rglob("id2label.json"), None)
        if found:
            return data.read_id2label(str(found))
    else:
        found = data.hub_id2label(options.dataset)
        if found:
            return found
    if not is_variant(options.model):
        config = SegFormerConfig.from_pretrained(options.model, revision=options.revision, token=options.token)
        # An ImageNet encoder's labels are no segmentation classes.
        if any("SemanticSegmentation" in name for name in config.architectures or []):
            return {int(i): name for i, name in config.id2label.items()}
    raise DataError(
        f"No class names found for dataset {options.dataset!r} (no id2label.json) nor in the checkpoint: "
        "give them with --id2label (a JSON file, a JSON object or 'name0,name1,...')."
    )


def labels_and_label_map(options: TrainingOptions) -> tuple:
    """id2label, and the --label-map checked against it."""
    id2label = resolve_id2label(options)
    label_map = data.parse_label_map(options.label_map)
    data.check_label_map(label_map, len(data.mask_classes(id2label)), do_reduce_labels=options.do_reduce_labels)
    return id2label, label_map


def build_datasets(options: TrainingOptions, processor: SegFormerImageProcessor) -> tuple:
    """(train, validation) SegmentationDatasets and id2label; images normalised as `processor` does."""
    # Class names given with --id2label (or the built-in set's) are known before the data is loaded, which
    # takes minutes for a Hub dataset: a --label-map they rule out fails first.
    known_early = bool(options.id2label) or options.dataset == data.BUILTIN_DATASET
    if known_early:
        id2label, label_map = labels_and_label_map(options)
    train_split, eval_split = data.load_splits(
        options.dataset,
        config_name=options.dataset_config,
        train_split=options.train_split,
        eval_split=options.eval_split,
        validation_fraction=options.validation_fraction,
        seed=options.seed,
    )
    if options.max_train_samples:
        train_split = train_split.select(range(min(options.max_train_samples, len(train_split))))
    if options.max_eval_samples:
        eval_split = eval_split.select(range(min(options.max_eval_samples, len(eval_split))))
    if not known_early:
        id2label, label_map = labels_and_label_map(options)
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
        image_column=options.image_column,
        label_column=options.label_column,
        do_reduce_labels=options.do_reduce_labels,
        label_map=label_map,
        seed=options.seed,
    )
    train = data.SegmentationDataset(train_split, train_transform, split=options.train_split, **common)
    evaluation = data.SegmentationDataset(eval_split, data.EvalTransform(**norm), split=options.eval_split, **common)
    return train, evaluation, id2label


def check_samples(dataset: data.SegmentationDataset, accelerator) -> data.SplitAudit:
    """Reads every sample once (each process its share) so bad data fails before training starts, and
    audits the masks on the way; the audit is merged across processes, the same on each."""
    audit = data.SplitAudit(dataset.split, dataset.num_labels, dataset.ignore_index)
    indices = range(accelerator.process_index, len(dataset), accelerator.num_processes)
    for index in tqdm(indices, desc=f"checking {dataset.split}", disable=not accelerator.is_local_main_process):
        _, stored, label = dataset.load_sample(index)
        audit.add(stored, label)
    return data.reduce_audit(audit, accelerator)


def audit_datasets(train, evaluation, accelerator, eval_only: bool = False) -> dict:
    """{"train": audit, "validation": audit} of the checked splits (no training split with eval_only)."""
    audits = {} if eval_only else {"train": check_samples(train, accelerator)}
    audits["validation"] = check_samples(evaluation, accelerator)
    return audits
