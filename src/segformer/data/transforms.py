"""The SegFormer paper's augmentation and the evaluation input, on an image and its mask together.

The augmentation follows the original mmseg pipeline (random resize with ratio 0.5-2.0, random crop with
`cat_max_ratio`, horizontal flip, photometric distortion, normalise, pad) on PIL images and numpy arrays.
Normalisation is `image_processing_segformer`'s, the one every entry point uses.

Images of other than 3 channels (grey, RGB-NIR, multispectral) go through the same resize, crop and flip
as one float PIL image per band (`Bands`); the photometric distortion, a colour operation, only applies to
3-channel images.
"""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..configuration_segformer import IGNORE_INDEX
from ..image_processing_segformer import IMAGENET_MEAN, IMAGENET_STD, normalize, to_array


def random_resize(image, label: np.ndarray, scale: tuple, ratio_range: tuple, rng) -> tuple:
    """Rescale a PIL image or `Bands` and its mask, keeping the aspect ratio, to fit `scale` (long, short
    side) times a random ratio."""
    ratio = rng.uniform(*ratio_range)
    width, height = image.size
    factor = min(max(scale) * ratio / max(width, height), min(scale) * ratio / min(width, height))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    label_image = Image.fromarray(label.astype(np.int32), mode="I").resize(size, Image.NEAREST)
    return image.resize(size, Image.BILINEAR), np.asarray(label_image, dtype=np.int64)


def random_crop(image, label: np.ndarray, crop_size: tuple, cat_max_ratio: float, ignore_index: int, rng) -> tuple:
    """A random crop of a PIL image or `Bands` and its mask (the whole side where the image is smaller).
    As mmseg, up to 10 tries to find a crop where no single class covers more than `cat_max_ratio` of the
    labelled pixels."""
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


class Bands:
    """An (H, W, C) image as one float ("F") PIL image per band, with the part of PIL's image interface the
    augmentation uses (`size`, `resize`, `crop`, `transpose`): every band is resampled as PIL resamples
    an RGB image, without rounding to 8 bits. `np.asarray(bands)` is the (H, W, C) float32 array."""

    def __init__(self, bands: list):
        self.bands = bands

    @classmethod
    def from_array(cls, array: np.ndarray) -> "Bands":
        array = np.asarray(array, dtype=np.float32)
        return cls([Image.fromarray(np.ascontiguousarray(array[..., c])) for c in range(array.shape[-1])])

    @property
    def size(self) -> tuple:
        return self.bands[0].size

    def resize(self, size, resample=None) -> "Bands":
        return Bands([band.resize(size, resample) for band in self.bands])

    def crop(self, box) -> "Bands":
        return Bands([band.crop(box) for band in self.bands])

    def transpose(self, method) -> "Bands":
        return Bands([band.transpose(method) for band in self.bands])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = np.stack([np.asarray(band, dtype=np.float32) for band in self.bands], axis=-1)
        return array if dtype is None else array.astype(dtype)


def pad(pixels: torch.Tensor, label: np.ndarray, size: tuple, ignore_index: int) -> tuple:
    """Pads (C, H, W) pixels with 0 and the mask with the ignore index (never a real class) at the bottom
    and right, up to `size` (height, width)."""
    extra_h, extra_w = max(size[0] - label.shape[0], 0), max(size[1] - label.shape[1], 0)
    pixels = torch.nn.functional.pad(pixels, (0, extra_w, 0, extra_h), value=0.0)
    label = np.pad(label, ((0, extra_h), (0, extra_w)), constant_values=ignore_index)
    return pixels, label


@dataclass
class TrainTransform:
    """The paper's training augmentation, on an image and its mask together. The images have as many
    channels as `mean` has values (`to_array` reads them); the photometric distortion only applies to
    3-channel images."""

    crop_size: tuple = (512, 512)
    scale: tuple = (2048, 512)
    ratio_range: tuple = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    ignore_index: int = IGNORE_INDEX

    @property
    def num_channels(self) -> int:
        return len(self.mean)

    def __call__(self, image, label: np.ndarray, rng: np.random.Generator) -> dict:
        # Any image as the processor reads it: RGB as an 8-bit PIL image (what the photometric distortion
        # works on), any other number of channels as float bands.
        array = to_array(image, self.num_channels)
        image = Image.fromarray(array.astype(np.uint8)) if self.num_channels == 3 else Bands.from_array(array)
        image, label = random_resize(image, label, self.scale, self.ratio_range, rng)
        image, label = random_crop(image, label, self.crop_size, self.cat_max_ratio, self.ignore_index, rng)
        if rng.uniform() < self.flip_prob:
            image, label = image.transpose(Image.FLIP_LEFT_RIGHT), label[:, ::-1]
        if self.photometric and self.num_channels == 3:
            image = photometric_distortion(image, rng)
        pixels = normalize(to_array(image, self.num_channels), self.mean, self.std)
        pixels, label = pad(pixels, label, self.crop_size, self.ignore_index)
        return {"pixel_values": pixels, "labels": torch.from_numpy(np.ascontiguousarray(label))}


@dataclass
class EvalTransform:
    """Evaluation input: the image normalised at its own size, as `SegFormerImageProcessor` normalises it,
    and the mask at its resolution, where the metrics are measured. The resizing of the evaluation
    protocol happens at inference (`segformer.inference.segment`), as for every other entry point. The
    images have as many channels as `mean` has values."""

    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    @property
    def num_channels(self) -> int:
        return len(self.mean)

    def __call__(self, image, label: np.ndarray, rng=None) -> dict:
        pixels = normalize(to_array(image, self.num_channels), self.mean, self.std)
        return {"pixel_values": pixels, "labels": torch.from_numpy(label)}


def pad_collate(samples: list, ignore_index: int = IGNORE_INDEX) -> dict:
    """Batches samples of different sizes: pads them as `pad` does and keeps each one's true image and
    label size, so that each image is cropped back before it is segmented (the model never sees the
    padding) and each label before it is scored."""
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
