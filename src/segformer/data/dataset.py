"""`SegmentationDataset`: image/mask pairs of a `datasets.Dataset` as checked, transformed torch samples.

Every mask is checked when it is read, and a failure raises a DataError that names the split, index and
file, so bad data stops a run before training. Each sample draws its randomness from (seed, epoch,
index) alone, so a resumed run sees exactly the augmentations the uninterrupted run saw.
"""

import numpy as np
import torch

from ..configuration_segformer import IGNORE_INDEX
from ..errors import DataError, InputError
from ..files import image_size, open_image
from ..image_processing_segformer import check_channels
from .label_map import class_ids


def _sample_name(value, split: str, index: int) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    return f"{split}[{index}]" + (f" ({path})" if path else "")


class SampleReader:
    """Reads one row of image/mask columns into a checked sample: what `SegmentationDataset` and the
    streaming dataset (`data.streaming`) share. Subclasses set the attributes `configure` sets."""

    def configure(self, transform, *, num_labels, image_column, label_column, do_reduce_labels, label_map,
                  ignore_index, split, seed):  # fmt: skip
        self.transform = transform
        self.num_labels = num_labels
        self.image_column, self.label_column = image_column, label_column
        self.do_reduce_labels = do_reduce_labels
        self.label_map = dict(label_map or {})
        self.ignore_index = ignore_index
        self.split = split
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def read_row(self, row: dict, name: str) -> tuple:
        """(image, mask values as stored, checked class ids) of one row; a DataError names the sample."""
        try:
            image = open_image(row[self.image_column])
            mask = row[self.label_column]
            label_image = np.asarray(mask) if isinstance(mask, list) else open_image(mask)
        except InputError as error:
            raise DataError(f"Sample {name}: the image or its mask is not a readable image file ({error})") from None
        try:
            check_channels(image, getattr(self.transform, "num_channels", 3))
        except ValueError as error:
            raise DataError(
                f"Sample {name}: {error}. Give every image the same bands, or set the model's input channels "
                "(--num-channels)."
            ) from None
        if isinstance(label_image, np.ndarray):  # a mask stored as an array of class ids (.npy, a 2-d column)
            mode, mask_size = ("L" if label_image.ndim == 2 else f"{label_image.ndim}-d array"), label_image.shape[::-1]
        else:
            mode, mask_size = label_image.mode, label_image.size
        if mode not in ("L", "P", "I", "I;16", "1"):
            raise DataError(
                f"Sample {name}: the mask is a {mode} image; masks must be single-channel class ids "
                "(mode L, P or I). Convert colour-coded masks to class ids first."
            )
        if tuple(mask_size) != tuple(image_size(image)):
            raise DataError(
                f"Sample {name}: the image is {image_size(image)[0]}x{image_size(image)[1]} but its mask is "
                f"{mask_size[0]}x{mask_size[1]}; they must have the same size."
            )
        stored = np.asarray(label_image, dtype=np.int64)
        label = class_ids(stored, self.label_map, self.do_reduce_labels, self.ignore_index)
        bad = np.unique(label[(label != self.ignore_index) & ((label < 0) | (label >= self.num_labels))])
        if bad.size:
            applied = (("--label-map", self.label_map), ("--do-reduce-labels", self.do_reduce_labels))
            steps = [step for step, on in applied if on]
            raise DataError(
                f"Sample {name}: the mask has class ids {bad.tolist()[:10]} but the model has {self.num_labels} "
                f"labels (0..{self.num_labels - 1}; {self.ignore_index} is ignored"
                + (f"; after {' and '.join(steps)}" if steps else "")
                + "). Check id2label / --num-labels / --label-map / --do-reduce-labels."
            )
        return image, stored, label

    def sample(self, image, label: np.ndarray, *key: int) -> dict:
        """The transformed sample; its randomness comes from (seed, epoch, *key) alone."""
        rng = np.random.default_rng([self.seed, self.epoch, *key])
        return self.transform(image, label, rng)


def image_columns_undecoded(dataset, columns: tuple):
    """`dataset` with its Image columns among `columns` left undecoded: decoding ourselves keeps the file
    path for error messages."""
    import datasets

    for column in columns:
        if isinstance((dataset.features or {}).get(column), datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


class SegmentationDataset(SampleReader, torch.utils.data.Dataset):
    """A `datasets.Dataset` of image/mask pairs as a torch dataset of checked, transformed samples.

    Every mask is checked when it is read: single channel, the image's size, class ids below
    `num_labels` or equal to the ignore index. The class ids are the stored values after `label_map`
    ({stored: new}; values it does not name stay) and then `do_reduce_labels`, applied here and only here.
    Every image has the channels of the transform (`transform.num_channels`, 3 without one).
    A failure raises a DataError that names the split, index and file.
    """

    def __init__(
        self,
        dataset,
        transform,
        *,
        num_labels: int,
        image_column: str = "image",
        label_column: str = "label",
        do_reduce_labels: bool = False,
        label_map: dict = None,
        ignore_index: int = IGNORE_INDEX,
        split: str = "train",
        seed: int = 0,
    ):
        missing = [c for c in (image_column, label_column) if c not in dataset.column_names]
        if missing:
            raise DataError(
                f"The {split} split has no column {missing}; its columns are {dataset.column_names}. "
                "Name the columns with --image-column / --label-column."
            )
        if len(dataset) == 0:
            raise DataError(f"The {split} split is empty: it needs at least one image/mask pair.")
        dataset = image_columns_undecoded(dataset, (image_column, label_column))
        self.dataset = dataset.select_columns([image_column, label_column])
        self.configure(transform, num_labels=num_labels, image_column=image_column, label_column=label_column,
                       do_reduce_labels=do_reduce_labels, label_map=label_map, ignore_index=ignore_index, split=split,
                       seed=seed)  # fmt: skip

    def __len__(self) -> int:
        return len(self.dataset)

    def load_pair(self, index: int) -> tuple:
        """The checked (image as opened, class-id mask as int64 array) of one sample."""
        image, _, label = self.load_sample(index)
        return image, label

    def load_sample(self, index: int) -> tuple:
        """(image, mask values as stored, checked class ids): the dataset audit reads both masks."""
        row = self.dataset[index]
        return self.read_row(row, _sample_name(row[self.image_column], self.split, index))

    def __getitem__(self, index: int) -> dict:
        image, label = self.load_pair(index)
        return self.sample(image, label, index)
