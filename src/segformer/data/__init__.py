"""Segmentation data for training and evaluation: the built-in generated dataset, loading datasets in any
form users have them (`open_dataset`: the paper's datasets as unpacked, `datasets` folders, Parquet, Hub
ids, streams), label maps, checked samples, the dataset audit, and the paper's augmentation.
`transformers.Trainer` users take `SegmentationDataset`, `TrainTransform` and `EvalTransform` from here."""

from .audit import SplitAudit, check_audits, class_weights, dataset_report, format_table, merge_audits, reduce_audit
from .builtin import (
    BUILTIN_CARD_NAME,
    BUILTIN_DATASET,
    BUILTIN_ID2LABEL,
    generate_builtin_dataset,
    generate_sample,
    image_pairs,
)
from .columns import find_columns
from .dataset import SegmentationDataset
from .label_map import apply_label_map, check_label_map, class_ids, mask_classes, parse_label_map
from .layouts import FORMATS
from .loading import (
    SegmentationData,
    dataset_source,
    hub_id2label,
    load_splits,
    open_dataset,
    read_id2label,
    train_and_eval,
)
from .streaming import StreamingSegmentation, take
from .transforms import (
    EvalTransform,
    TrainTransform,
    pad,
    pad_collate,
    photometric_distortion,
    random_crop,
    random_resize,
)

__all__ = [
    "BUILTIN_CARD_NAME",
    "BUILTIN_DATASET",
    "BUILTIN_ID2LABEL",
    "EvalTransform",
    "FORMATS",
    "SegmentationData",
    "SegmentationDataset",
    "StreamingSegmentation",
    "SplitAudit",
    "TrainTransform",
    "apply_label_map",
    "check_audits",
    "check_label_map",
    "class_ids",
    "class_weights",
    "dataset_report",
    "dataset_source",
    "find_columns",
    "format_table",
    "generate_builtin_dataset",
    "generate_sample",
    "hub_id2label",
    "image_pairs",
    "load_splits",
    "mask_classes",
    "merge_audits",
    "open_dataset",
    "pad",
    "pad_collate",
    "parse_label_map",
    "photometric_distortion",
    "random_crop",
    "random_resize",
    "read_id2label",
    "reduce_audit",
    "take",
    "train_and_eval",
]
