"""Image-classification data for pretraining, in the forms users have it, checked before training:

- an image folder, one sub-folder per class in each split (`train/CLASS/*.jpg`, `val/CLASS/*.jpg`, as
  ImageNet unpacks for DeiT and PVT);
- a `datasets` dataset with an image column and a class-label column (the `imagenet-1k` layout: `image`,
  `label` ClassLabel), from the Hub, a `save_to_disk` folder or Parquet files: read by
  `segformer.data.open_dataset`, the loader of `segformer train`;
- the built-in generated set (`synthetic`).

Before any training: at least two classes, no class without training images, no validation class the
training split lacks, and (image folders, --check-data) every image file readable. Each is a DataError
that names what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import data as segdata
from ..errors import DataError
from ..files import IMAGE_SUFFIXES, open_image
from ..image_processing_segformer import to_array
from .synthetic import BUILTIN_PRETRAIN_CARD_NAME, generate_classification_dataset

LABEL_NAMES = ("label", "labels", "class", "category", "target", "fine_label")
SHOWN = 5  # names listed in an error before "and N more"


@dataclass
class ClassificationData:
    """The splits as `datasets.Dataset`s, their columns and class names, and what a user should be told."""

    source: str
    form: str
    train: object
    eval: object
    id2label: dict
    image_column: str = "image"
    label_column: str = "label"
    card_name: str | None = None
    notes: list = field(default_factory=list)


def _listed(names: list) -> str:
    names = [str(name) for name in names]
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def is_class_folder(root: Path, split: str) -> bool:
    """Whether `root/split` (or an alias of it) holds class sub-folders."""
    folder = _split_folder(root, split)
    return folder is not None and any(p.is_dir() for p in folder.iterdir())


def _split_folder(root: Path, split: str) -> Path | None:
    for name in segdata.loading.SPLIT_ALIASES.get(split, (split,)):
        if (root / name).is_dir():
            return root / name
    return None


def scan_class_folders(root: Path, split: str) -> dict:
    """{class name: [image paths]} of `root/split`, classes sorted; an empty class is a DataError."""
    folder = _split_folder(root, split)
    classes = {p.name: sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
               for p in sorted(folder.iterdir()) if p.is_dir()}  # fmt: skip
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DataError(f"{folder}: class folder{'s' if len(empty) > 1 else ''} {_listed(empty)} hold{'' if len(empty) > 1 else 's'} "
                        f"no image ({', '.join(IMAGE_SUFFIXES)}); remove or fill {'them' if len(empty) > 1 else 'it'}.")  # fmt: skip
    return classes


def unreadable_images(paths: list) -> list:
    """The files PIL cannot identify and verify (its header and, for PNG, its checksums), as "path (reason)"."""
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # PIL raises many kinds for broken files; each is reported, none is fatal here
            bad.append(f"{path} ({type(error).__name__})")
    return bad


def _folder_data(root: Path, options, log) -> ClassificationData:
    import datasets

    train = scan_class_folders(root, options.train_split)
    names = list(train)
    has_eval = _split_folder(root, options.eval_split) is not None
    evaluation = scan_class_folders(root, options.eval_split) if has_eval else {}
    extra = [name for name in evaluation if name not in train]
    if extra:
        raise DataError(f"{_split_folder(root, options.eval_split)}: class{'es' if len(extra) > 1 else ''} {_listed(extra)} "
                        f"{'are' if len(extra) > 1 else 'is'} not in the training split {_split_folder(root, options.train_split)}; "
                        "a model cannot learn a class it never sees. Add training images or remove the class.")  # fmt: skip
    if options.check_data:
        paths = [p for files in (*train.values(), *evaluation.values()) for p in files]
        log(f"Checking {len(paths)} image files (--no-check-data skips this)...")
        bad = unreadable_images(paths)
        if bad:
            raise DataError(f"{len(bad)} image file{'s' if len(bad) > 1 else ''} cannot be read: {_listed(bad)}. "
                            "Remove or replace them.")  # fmt: skip
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ids = {name: i for i, name in enumerate(names)}

    def split(classes: dict):
        rows = [(str(p), ids[name]) for name, files in classes.items() for p in files]
        return datasets.Dataset.from_dict({"image": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=features)

    found = ClassificationData(str(root), "image folder", split(train), split(evaluation) if has_eval else None,
                               dict(enumerate(names)))  # fmt: skip
    found.notes.append(f"{len(names)} classes, {len(found.train)} training images")
    return found


def _label_column(features, given: str | None) -> str:
    import datasets

    if given is not None:
        if given not in features:
            raise DataError(f"--label-column {given!r}: the dataset has no such column; its columns: {list(features)}.")
        return given
    labelled = [name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
    named = [name for name in labelled if name.lower() in LABEL_NAMES] or labelled
    if len(named) != 1:
        what = "no ClassLabel column" if not named else f"several ClassLabel columns {named}"
        raise DataError(f"The dataset has {what} (columns: {list(features)}); name the class column with --label-column.")
    return named[0]


def _datasets_data(options) -> ClassificationData:
    opened = segdata.open_dataset(options.dataset, config_name=options.dataset_config, image_column=options.image_column,
                                  seed=options.seed, masks=False)  # fmt: skip
    train = opened.split(options.train_split)
    label_column = _label_column(train.features, options.label_column)
    feature = train.features[label_column]
    names = getattr(feature, "names", None)
    if names is None:  # integer ids without names
        ids = sorted(train.unique(label_column))
        names = [str(i) for i in range(max(ids) + 1)] if ids else []
    opened.label_column = label_column
    train, evaluation = segdata.train_and_eval(opened, options.train_split, options.eval_split, options.validation_fraction, options.seed)
    found = ClassificationData(options.dataset, opened.form, train, evaluation, dict(enumerate(names)),
                               image_column=opened.image_column, label_column=label_column, notes=opened.notes)  # fmt: skip
    found.notes.append(f"classes from column {label_column!r}")
    return found


def open_classification_data(options, log=print) -> ClassificationData:
    """The training and validation splits that `options` name, checked (module docstring)."""
    kind = segdata.dataset_source(options.dataset)
    if kind == "builtin":
        splits = generate_classification_dataset(seed=options.seed)
        names = splits["train"].features["label"].names
        found = ClassificationData(segdata.BUILTIN_DATASET, "builtin", splits["train"], splits["validation"],
                                   dict(enumerate(names)), card_name=BUILTIN_PRETRAIN_CARD_NAME)  # fmt: skip
        found.notes.append(f"generated textures and shapes, {len(names)} classes")
    elif kind == "folder" and is_class_folder(Path(options.dataset), options.train_split):
        found = _folder_data(Path(options.dataset), options, log)
    else:
        found = _datasets_data(options)
    if found.eval is None:
        held_out = found.train.train_test_split(test_size=options.validation_fraction, seed=options.seed)
        found.train, found.eval = held_out["train"], held_out["test"]
        found.notes.append(f"no split {options.eval_split!r}: holding out {len(found.eval)} training images")
    if options.max_train_samples:
        found.train = found.train.select(range(min(options.max_train_samples, len(found.train))))
    if options.max_eval_samples:
        found.eval = found.eval.select(range(min(options.max_eval_samples, len(found.eval))))
    check_classes(found)
    return found


def check_classes(found: ClassificationData):
    """Two classes at least, each with training images, and none in the validation split only."""
    names = found.id2label
    if len(names) < 2:
        raise DataError(f"Dataset {found.source!r} has {len(names)} class{'' if len(names) == 1 else 'es'} "
                        f"({_listed(list(names.values()))}); classification needs two at least.")  # fmt: skip
    seen = set(found.train.unique(found.label_column))
    out_of_range = sorted(i for i in seen if i not in names)
    if out_of_range:
        raise DataError(f"Training labels {_listed(out_of_range)} are not class ids 0..{len(names) - 1} of {found.source!r}.")
    empty = [names[i] for i in names if i not in seen]
    if empty:
        raise DataError(f"Class{'es' if len(empty) > 1 else ''} {_listed(empty)} of {found.source!r} "
                        f"{'have' if len(empty) > 1 else 'has'} no training image.")  # fmt: skip
    extra = sorted(set(found.eval.unique(found.label_column)) - seen)
    if extra:
        raise DataError(f"The validation split has class{'es' if len(extra) > 1 else ''} {_listed([names.get(i, i) for i in extra])} "
                        "that the training split lacks; a model cannot learn a class it never sees.")  # fmt: skip


class ClassificationDataset(torch.utils.data.Dataset):
    """(pixel_values, label) samples of a split: training images augmented (`TrainAugmentation`) then
    normalised by the processor; validation images through the processor's whole protocol."""

    def __init__(self, split, image_column: str, label_column: str, processor, augmentation=None):
        self.split, self.image_column, self.label_column = split, image_column, label_column
        self.processor, self.augmentation = processor, augmentation
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        row = self.split[index]
        image = open_image(row[self.image_column], name=f"image {index}")
        if self.augmentation is None:
            pixels = self.processor.pixel_values(image)
        else:
            array = to_array(image, self.processor.num_channels).clip(0, 255).astype(np.uint8)
            pixels = self.processor.pixel_values(self.augmentation(array, self.epoch, index), do_resize=False)
        return {"pixel_values": pixels, "labels": torch.tensor(row[self.label_column], dtype=torch.long)}
