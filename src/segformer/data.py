"""Segmentation datasets for training: loading (Hub, local folders, the built-in generated set),
sample checks with errors that name the sample, and the SegFormer paper's augmentation.

The augmentation follows the original mmseg pipeline (random resize with ratio 0.5-2.0, random crop
with `cat_max_ratio`, horizontal flip, photometric distortion, normalise, pad) on PIL images and
numpy arrays, applied to the image and its mask together. Each sample draws its randomness from
(seed, epoch, index) alone, so a resumed run sees exactly the augmentations the uninterrupted run saw.

`datasets` (the optional `train` extra) is imported where it is used: the `segformer` command imports
this module to build its help, which must work without the extra.
"""

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}

# The built-in dataset: shapes filled with a texture that names their class, in random colours on a
# smooth random background, so only the texture (not the colour) tells the classes apart.
BUILTIN_DATASET = "builtin"
BUILTIN_CARD_NAME = "segformer-builtin-textures"  # how model cards name it: it is on no Hub
BUILTIN_ID2LABEL = {0: "background", 1: "stripes", 2: "checkers", 3: "dots"}


# --- the built-in generated dataset -----------------------------------------------------------------


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) pattern in {0, 1} of one texture class, with random scale, phase and angle."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(8, 12)
        return (((xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform()) % 1.0 < 0.5).astype(np.float32)
    if kind == "checkers":
        cell = rng.integers(5, 9)
        return ((xx // cell + yy // cell) % 2).astype(np.float32)
    if kind == "dots":
        period = rng.uniform(8, 11)
        dy, dx = (yy / period + rng.uniform()) % 1.0 - 0.5, (xx / period + rng.uniform()) % 1.0 - 0.5
        return (np.hypot(dy, dx) < 0.28).astype(np.float32)
    raise ValueError(f"Unknown texture {kind!r}.")


def _color_pair(rng: np.random.Generator) -> tuple:
    # The second colour is far from the first in every channel, so every texture stays visible.
    first = rng.integers(0, 256, 3)
    second = (first + 128 + rng.integers(-40, 41, 3)) % 256
    return first.astype(np.float32), second.astype(np.float32)


def _shape_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of one random ellipse, rectangle or triangle, 30-60% of the image wide."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    width, height = rng.uniform(0.3, 0.6, 2) * size
    left, top = rng.uniform(0, size - width), rng.uniform(0, size - height)
    box = [left, top, left + width, top + height]
    shape = rng.integers(3)
    if shape == 0:
        draw.ellipse(box, fill=1)
    elif shape == 1:
        draw.rectangle(box, fill=1)
    else:
        draw.polygon([(left, top + height), (left + width / 2, top), (left + width, top + height)], fill=1)
    return np.asarray(canvas, dtype=bool)


def generate_sample(size: int, rng: np.random.Generator) -> tuple:
    """One (RGB image, class-id mask) pair of the built-in dataset."""
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    gradient = ramp[None, :, None] if rng.uniform() < 0.5 else ramp[:, None, None]
    start, end = _color_pair(rng)
    image = start + (end - start) * 0.35 * gradient + rng.normal(0, 6, (size, size, 3))
    label = np.zeros((size, size), np.uint8)
    textures = list(BUILTIN_ID2LABEL.values())[1:]
    for _ in range(rng.integers(2, 5)):
        class_id = rng.integers(1, len(BUILTIN_ID2LABEL))
        mask = _shape_mask(size, rng)
        pattern = _texture(textures[class_id - 1], size, rng)[..., None]
        first, second = _color_pair(rng)
        image[mask] = (first + (second - first) * pattern)[mask]
        label[mask] = class_id
    image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return image, Image.fromarray(label)


def image_pairs(images: list, labels: list):
    """A `datasets.Dataset` with `image` and `label` image columns (PIL images or file paths)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def generate_builtin_dataset(num_train: int = 240, num_validation: int = 48, size: int = 96, seed: int = 0):
    """The built-in dataset as a `datasets.DatasetDict` of `image` / `label` pairs."""
    import datasets

    splits = {}
    for offset, (split, count) in enumerate((("train", num_train), ("validation", num_validation))):
        rng = np.random.default_rng([seed, offset])
        images, labels = zip(*(generate_sample(size, rng) for _ in range(count)))
        splits[split] = image_pairs(list(images), list(labels))
    return datasets.DatasetDict(splits)


# --- loading ----------------------------------------------------------------------------------------


def _paired_folder_split(folder: Path):
    """`folder/images/NAME.*` paired with `folder/labels/NAME.png` (the same stem)."""
    images = {p.stem: p for p in sorted((folder / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    labels = {p.stem: p for p in sorted((folder / "labels").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        raise ValueError(
            f"{folder}: {len(unpaired)} files have no partner in images/ and labels/ (same name stem), e.g. "
            f"{unpaired[:5]}. Every image needs a mask with the same stem."
        )
    return image_pairs([str(images[stem]) for stem in images], [str(labels[stem]) for stem in images])


def load_local_folder(root: Path):
    """A local dataset: either `imagefolder` with a metadata.jsonl/csv whose `image_file_name` and
    `label_file_name` columns pair the files, or one folder per split with `images/` and `labels/`."""
    import datasets

    if any(root.rglob("metadata.jsonl")) or any(root.rglob("metadata.csv")):
        return datasets.load_dataset("imagefolder", data_dir=str(root))
    splits = {p.name: _paired_folder_split(p) for p in sorted(root.iterdir()) if (p / "images").is_dir()}
    if (root / "images").is_dir():
        splits["train"] = _paired_folder_split(root)
    if not splits:
        raise ValueError(
            f"{root} holds no dataset: expected SPLIT/images + SPLIT/labels folders (or images/ + labels/), "
            "or an imagefolder with metadata.jsonl pairing `image_file_name` and `label_file_name`."
        )
    return datasets.DatasetDict(splits)


def load_splits(
    source: str = None,
    *,
    config_name: str = None,
    train_split: str = "train",
    eval_split: str = "validation",
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> tuple:
    """(train, eval) `datasets.Dataset`s from the built-in set (None or "builtin"), a local folder or
    a Hub dataset id. Without an eval split, `validation_fraction` of the training split is held out."""
    import datasets

    if source in (None, BUILTIN_DATASET):
        splits = generate_builtin_dataset(seed=seed)
    elif Path(source).is_dir():
        splits = load_local_folder(Path(source))
    else:
        splits = datasets.load_dataset(source, config_name)
    if train_split not in splits:
        raise ValueError(f"Dataset {source!r} has no split {train_split!r}; its splits: {list(splits)}.")
    train = splits[train_split]
    if eval_split in splits:
        return train, splits[eval_split]
    held_out = train.train_test_split(test_size=validation_fraction, seed=seed)
    print(f"Dataset {source!r} has no split {eval_split!r}: holding out {len(held_out['test'])} training samples.")
    return held_out["train"], held_out["test"]


def read_id2label(value: str) -> dict:
    """`id2label` from a JSON file, a JSON object or comma-separated names ("road,car,sky")."""
    if value.endswith(".json"):
        mapping = json.loads(Path(value).read_text())
    elif value.lstrip().startswith("{"):
        mapping = json.loads(value)
    else:
        mapping = dict(enumerate(name.strip() for name in value.split(",")))
    return {int(key): str(name) for key, name in mapping.items()}


def hub_id2label(repo_id: str):
    """The `id2label.json` that many Hub segmentation datasets carry, or None."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return read_id2label(hf_hub_download(repo_id, "id2label.json", repo_type="dataset"))
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError):  # absent, or offline
        return None


# --- samples with checks ------------------------------------------------------------------------------


def _open_image(value) -> Image.Image:
    """A PIL image from what a `datasets.Image(decode=False)` column (or a path column) holds."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        return Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    return Image.open(value)


def _sample_name(value, split: str, index: int) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    return f"{split}[{index}]" + (f" ({path})" if path else "")


def reduce_labels(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """ADE20K-style masks where 0 means "other": 0 becomes the ignore index, every class id moves down
    by one, and the ignore index stays itself."""
    label = label.astype(np.int64)
    reduced = label - 1
    reduced[(label == 0) | (label == ignore_index)] = ignore_index
    return reduced


class SegmentationDataset(torch.utils.data.Dataset):
    """A `datasets.Dataset` of image/mask pairs as a torch dataset of checked, transformed samples.

    Every mask is checked when it is read: single channel, the image's size, class ids below
    `num_labels` or equal to the ignore index (after `do_reduce_labels`, applied here and only here).
    A failure raises a ValueError that names the split, index and file.
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
        ignore_index: int = 255,
        split: str = "train",
        seed: int = 0,
    ):
        import datasets

        missing = [c for c in (image_column, label_column) if c not in dataset.column_names]
        if missing:
            raise ValueError(
                f"The {split} split has no column {missing}; its columns are {dataset.column_names}. "
                "Name the columns with --image-column / --label-column."
            )
        if len(dataset) == 0:
            raise ValueError(f"The {split} split is empty: it needs at least one image/mask pair.")
        # Decoding ourselves keeps the file path for error messages.
        for column in (image_column, label_column):
            if isinstance(dataset.features[column], datasets.Image):
                dataset = dataset.cast_column(column, datasets.Image(decode=False))
        self.dataset = dataset.select_columns([image_column, label_column])
        self.transform = transform
        self.num_labels = num_labels
        self.image_column, self.label_column = image_column, label_column
        self.do_reduce_labels = do_reduce_labels
        self.ignore_index = ignore_index
        self.split = split
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def load_pair(self, index: int) -> tuple:
        """The checked (RGB image, class-id mask as int64 array) of one sample."""
        row = self.dataset[index]
        name = _sample_name(row[self.image_column], self.split, index)
        try:
            image = _open_image(row[self.image_column]).convert("RGB")
            label_image = _open_image(row[self.label_column])
            label_image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"Sample {name}: the image or its mask is not a readable image file ({error}).") from None
        if label_image.mode not in ("L", "P", "I", "I;16", "1"):
            raise ValueError(
                f"Sample {name}: the mask is a {label_image.mode} image; masks must be single-channel class ids "
                "(mode L, P or I). Convert colour-coded masks to class ids first."
            )
        if label_image.size != image.size:
            raise ValueError(
                f"Sample {name}: the image is {image.size[0]}x{image.size[1]} but its mask is "
                f"{label_image.size[0]}x{label_image.size[1]}; they must have the same size."
            )
        label = np.asarray(label_image, dtype=np.int64)
        if self.do_reduce_labels:
            label = reduce_labels(label, self.ignore_index)
        bad = np.unique(label[(label != self.ignore_index) & ((label < 0) | (label >= self.num_labels))])
        if bad.size:
            raise ValueError(
                f"Sample {name}: the mask has class ids {bad.tolist()[:10]} but the model has {self.num_labels} "
                f"labels (0..{self.num_labels - 1}; {self.ignore_index} is ignored"
                + ("; after do_reduce_labels" if self.do_reduce_labels else "")
                + "). Check id2label / --num-labels / --do-reduce-labels."
            )
        return image, label

    def __getitem__(self, index: int) -> dict:
        image, label = self.load_pair(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.transform(image, label, rng)


# --- transforms ---------------------------------------------------------------------------------------


def normalize(image: Image.Image, mean, std) -> np.ndarray:
    """HWC uint8 image -> CHW float32, scaled to [0, 1] and standardised per channel."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return ((array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)


def random_resize(image: Image.Image, label: np.ndarray, scale: tuple, ratio_range: tuple, rng) -> tuple:
    """Rescale, keeping the aspect ratio, to fit `scale` (long, short side) times a random ratio."""
    ratio = rng.uniform(*ratio_range)
    width, height = image.size
    factor = min(max(scale) * ratio / max(width, height), min(scale) * ratio / min(width, height))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    label_image = Image.fromarray(label.astype(np.int32), mode="I").resize(size, Image.NEAREST)
    return image.resize(size, Image.BILINEAR), np.asarray(label_image, dtype=np.int64)


def random_crop(
    image: Image.Image, label: np.ndarray, crop_size: tuple, cat_max_ratio: float, ignore_index: int, rng
) -> tuple:
    """A random crop (the whole side where the image is smaller). As mmseg, up to 10 tries to find a
    crop where no single class covers more than `cat_max_ratio` of the labelled pixels."""
    height, width = label.shape
    crop_h, crop_w = min(crop_size[0], height), min(crop_size[1], width)

    def draw():
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        return top, left

    top, left = draw()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            window = label[top : top + crop_h, left : left + crop_w]
            counts = np.unique(window[window != ignore_index], return_counts=True)[1]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            top, left = draw()
    box = (left, top, left + crop_w, top + crop_h)
    return image.crop(box), label[top : top + crop_h, left : left + crop_w]


def photometric_distortion(image: Image.Image, rng) -> Image.Image:
    """mmseg's PhotoMetricDistortion: brightness, contrast (before or after the colour changes),
    saturation and hue, each applied with probability 0.5."""
    array = np.asarray(image, dtype=np.float32)
    if rng.uniform() < 0.5:
        array = np.clip(array + rng.uniform(-32, 32), 0, 255)
    contrast_first = rng.uniform() < 0.5
    contrast = rng.uniform(0.5, 1.5) if rng.uniform() < 0.5 else None
    if contrast is not None and contrast_first:
        array = np.clip(array * contrast, 0, 255)
    hsv = np.asarray(Image.fromarray(array.astype(np.uint8)).convert("HSV"), dtype=np.float32)
    if rng.uniform() < 0.5:
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
    if rng.uniform() < 0.5:
        # +-18 of OpenCV's 180 hue steps, in PIL's 256 steps.
        hsv[..., 0] = (hsv[..., 0] + rng.integers(-18, 19) * 256 / 180) % 256
    array = np.asarray(Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB"), dtype=np.float32)
    if contrast is not None and not contrast_first:
        array = np.clip(array * contrast, 0, 255)
    return Image.fromarray(array.astype(np.uint8))


def pad(pixels: np.ndarray, label: np.ndarray, size: tuple, ignore_index: int) -> tuple:
    """Pads CHW pixels with 0 and the mask with the ignore index (never a real class) at the bottom
    and right, up to `size` (height, width)."""
    extra_h, extra_w = max(size[0] - label.shape[0], 0), max(size[1] - label.shape[1], 0)
    pixels = np.pad(pixels, ((0, 0), (0, extra_h), (0, extra_w)), constant_values=0)
    label = np.pad(label, ((0, extra_h), (0, extra_w)), constant_values=ignore_index)
    return pixels, label


@dataclass
class TrainTransform:
    """The paper's training augmentation, on an image and its mask together."""

    crop_size: tuple = (512, 512)
    scale: tuple = (2048, 512)
    ratio_range: tuple = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    ignore_index: int = 255

    def __call__(self, image: Image.Image, label: np.ndarray, rng: np.random.Generator) -> dict:
        image, label = random_resize(image, label, self.scale, self.ratio_range, rng)
        image, label = random_crop(image, label, self.crop_size, self.cat_max_ratio, self.ignore_index, rng)
        if rng.uniform() < self.flip_prob:
            image, label = image.transpose(Image.FLIP_LEFT_RIGHT), label[:, ::-1]
        if self.photometric:
            image = photometric_distortion(image, rng)
        pixels, label = pad(normalize(image, self.mean, self.std), label, self.crop_size, self.ignore_index)
        return {"pixel_values": torch.from_numpy(pixels), "labels": torch.from_numpy(np.ascontiguousarray(label))}


@dataclass
class EvalTransform:
    """Evaluation input: the image resized (keeping its aspect ratio) to fit `scale` when one is given,
    normalised; the mask stays at its original resolution, where the metrics are measured."""

    scale: tuple = None
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    def __call__(self, image: Image.Image, label: np.ndarray, rng=None) -> dict:
        if self.scale:
            image, _ = random_resize(image, label, self.scale, (1.0, 1.0), rng)
        pixels = normalize(image, self.mean, self.std)
        return {"pixel_values": torch.from_numpy(pixels), "labels": torch.from_numpy(label)}


def pad_collate(samples: list, ignore_index: int = 255) -> dict:
    """Batches samples of different sizes: pads them as `pad` does and keeps each one's true image
    and label size, so predictions can be cropped back before scoring."""
    height = max(s["pixel_values"].shape[-2] for s in samples)
    width = max(s["pixel_values"].shape[-1] for s in samples)
    label_h = max(s["labels"].shape[-2] for s in samples)
    label_w = max(s["labels"].shape[-1] for s in samples)
    pixels = torch.zeros(len(samples), samples[0]["pixel_values"].shape[0], height, width)
    labels = torch.full((len(samples), label_h, label_w), ignore_index, dtype=torch.long)
    for i, sample in enumerate(samples):
        h, w = sample["pixel_values"].shape[-2:]
        pixels[i, :, :h, :w] = sample["pixel_values"]
        lh, lw = sample["labels"].shape
        labels[i, :lh, :lw] = sample["labels"]
    return {
        "pixel_values": pixels,
        "labels": labels,
        "image_sizes": torch.tensor([s["pixel_values"].shape[-2:] for s in samples]),
        "label_sizes": torch.tensor([s["labels"].shape for s in samples]),
    }
