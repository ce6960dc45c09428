"""Segmentation data for training and evaluation: the built-in generated dataset, loading local folders
and Hub datasets, checked samples, and the paper's augmentation. `transformers.Trainer` users take
`SegmentationDataset`, `TrainTransform` and `EvalTransform` from here."""

from .builtin import (
    BUILTIN_CARD_NAME,
    BUILTIN_DATASET,
    BUILTIN_ID2LABEL,
    generate_builtin_dataset,
    generate_sample,
    image_pairs,
)
from .dataset import SegmentationDataset
from .loading import hub_id2label, load_local_folder, load_splits, read_id2label
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
    "SegmentationDataset",
    "TrainTransform",
    "generate_builtin_dataset",
    "generate_sample",
    "hub_id2label",
    "image_pairs",
    "load_local_folder",
    "load_splits",
    "pad",
    "pad_collate",
    "photometric_distortion",
    "random_crop",
    "random_resize",
    "read_id2label",
]
