"""SegFormer's image processor: the one place that turns an image into model input and logits into a
label map.

Every entry point uses these functions: training evaluation, `segformer predict`, the demo and, through
`SegFormerImageProcessor` saved next to every model, `pipeline("image-segmentation")` and
`AutoImageProcessor` users. So the label map a user gets from the Hub is the one the training run scored.

The default resize policy is the paper's test protocol (Xie et al. 2021, after mmseg's `AlignedResize`):
the short side goes to `short_side` with the aspect ratio kept, and both sides are rounded up to a
multiple of `align` (32, so every stage divides evenly). It is applied to the normalised image as a
tensor. The label map is the argmax of the logits resized back to the input size and then to the image's
own size, as the original code does; `postprocessing_segformer` computes it without resizing every class.
A converted model's processor instead reproduces its source framework's protocol (`resize_protocol`:
mmsegmentation, NVlabs or transformers, with their uint8 resize arithmetic; see `resize_segformer.py`), so
that it gives the label maps its source gives.

This file is uploaded to the Hub next to the model files: it imports only numpy, PIL, torch,
`transformers`' public API and its siblings `resize_segformer.py`, `postprocessing_segformer.py` and the
configuration file.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .configuration_segformer import IGNORE_INDEX
from .resize_segformer import PROTOCOLS, UINT8_RESAMPLERS, as_uint8, resize_steps
from .postprocessing_segformer import logits_to_label_maps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Defaults for images of other than 3 channels (grey, RGB-NIR, multispectral): the mean of ImageNet's
# three values, for every channel. `segformer train --image-stats auto` measures a dataset's own.
GREY_MEAN = round(sum(IMAGENET_MEAN) / 3, 3)  # 0.449
GREY_STD = round(sum(IMAGENET_STD) / 3, 3)  # 0.226
# PIL modes whose values are not 8-bit, as (mode, largest value): scaled to 0..255 before normalising.
WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I": 65535}
# One-band PIL modes, read as they are.
GREY_MODES = ("1", "L", "F", *WIDE_MODES)
# PIL modes a 4-channel model reads as RGBA (or, for CMYK, as the 4 stored bands).
FOUR_BAND_MODES = ("RGBA", "RGBa", "LA", "La", "PA", "CMYK")


def default_mean_std(num_channels: int) -> tuple:
    """(mean, std) lists for `num_channels`: ImageNet's for 3 channels, else 0.449 / 0.226 repeated."""
    if num_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [GREY_MEAN] * num_channels, [GREY_STD] * num_channels


def _pil_mode(image: Image.Image, num_channels: int) -> str | None:
    """The mode `to_array` converts a PIL image to for a `num_channels` model (None: as it is)."""
    if image.mode in WIDE_MODES or image.mode == "F" or (num_channels == 4 and image.mode == "CMYK"):
        return None
    if num_channels == 1 or image.mode in ("1", "L"):
        return "L"
    return "RGBA" if num_channels == 4 and image.mode in FOUR_BAND_MODES else "RGB"


def image_channels(image, num_channels: int = 3) -> int:
    """The channels `to_array(image, num_channels)` reads from `image` (before a grey image is repeated
    for an RGB model), without converting it: to check a dataset's band counts cheaply."""
    if isinstance(image, Image.Image):
        mode = _pil_mode(image, num_channels) or image.mode
        return 1 if mode in GREY_MODES else Image.getmodebands(mode)
    shape = np.shape(image)
    return 1 if len(shape) == 2 else shape[-1]


def check_channels(image, num_channels: int):
    """Raises a ValueError when `to_array(image, num_channels)` would refuse the image's channels."""
    channels = image_channels(image, num_channels)
    if channels != num_channels and not (channels == 1 and num_channels == 3):
        raise ValueError(
            f"the image has {channels} channel{'s' if channels != 1 else ''} but the model takes {num_channels}"
        )


def to_array(image, num_channels: int = 3) -> np.ndarray:
    """An image (PIL in any mode, or an (H, W) / (H, W, C) array) as an (H, W, num_channels) float32
    array of 0..255 values.

    An RGB model (3 channels) reads every PIL image as RGB (palette expanded, alpha dropped) and repeats a
    grey image or one-channel array 3 times; a one-channel model reads every PIL image as grey (colour
    through PIL's "L"). Any other model needs images with its number of channels: 4-channel PNGs and TIFFs
    (RGBA, LA as RGBA, CMYK) for 4 channels, and arrays of shape (H, W, num_channels), such as `.npy`
    files or multi-page TIFFs read as bands (`segformer.files.open_image`). 16-bit images (I;16 and I
    modes, uint16 arrays) are scaled to 0..255; float images (F mode, float arrays) are taken as they are.
    A ValueError says when the channels do not match.
    """
    if isinstance(image, Image.Image):
        mode = _pil_mode(image, num_channels)
        array = np.asarray(image if mode is None else image.convert(mode), dtype=np.float32)
        if image.mode in WIDE_MODES:
            array = array * np.float32(255.0 / WIDE_MODES[image.mode])
    else:
        array = np.asarray(image)
        array = array.astype(np.float32) * np.float32(255.0 / 65535) if array.dtype == np.uint16 else array.astype(np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"An image must be (height, width) or (height, width, channels), got shape {array.shape}.")
    if array.shape[-1] == 1 and num_channels == 3:
        array = np.repeat(array, num_channels, axis=-1)
    if array.shape[-1] != num_channels:
        raise ValueError(f"The image has {array.shape[-1]} channels but the model takes {num_channels}.")
    return array


def normalize(array: np.ndarray, mean, std, rescale_factor: float = 1 / 255) -> torch.Tensor:
    """(H, W, C) 0..255 values -> (C, H, W) float32 tensor, rescaled and standardised per channel: in float32,
    `(value * rescale_factor - mean) / std`, written channels-first in the first step and then in place."""
    values = torch.from_numpy(np.asarray(array, dtype=np.float32)).permute(2, 0, 1)
    per_channel = [torch.as_tensor(value, dtype=torch.float32).expand(len(values))[:, None, None] for value in (mean, std)]
    pixels = torch.mul(values, torch.tensor(rescale_factor, dtype=torch.float32), out=torch.empty(values.shape))
    return pixels.sub_(per_channel[0]).div_(per_channel[1])


def reduce_labels(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """ADE20K-style masks where 0 means "other": 0 becomes the ignore index, every class id moves down
    by one, and the ignore index stays itself."""
    label = np.asarray(label, dtype=np.int64)
    reduced = label - 1
    reduced[(label == 0) | (label == ignore_index)] = ignore_index
    return reduced


def resized_size(height: int, width: int, short_side: int | None, scale: float = 1.0, align: int = 32) -> tuple:
    """(height, width) with the short side at `short_side * scale` (or the size times `scale` when
    `short_side` is None), aspect ratio kept, each side rounded up to a multiple of `align`."""
    factor = scale * (short_side / min(height, width) if short_side else 1.0)
    return tuple(math.ceil(round(side * factor) / align) * align for side in (height, width))


def resize(tensor: torch.Tensor, size: tuple) -> torch.Tensor:
    """Bilinear resize of a (B, C, H, W) tensor (images or logits); no copy when the size is right."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)


class SegFormerImageProcessor(BaseImageProcessor):
    r"""
    Prepares images for SegFormer and turns its logits into label maps, with the paper's test protocol.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Resize the image: short side to `short_side` (aspect ratio kept), sides rounded up to a multiple
            of `align`.
        short_side (`int`, *optional*, defaults to 512):
            Length of the short side after resizing; `None` keeps the image size (sides still aligned).
        align (`int`, *optional*, defaults to 32):
            Both resized sides are rounded up to a multiple of this.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Multiply the 0..255 values by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to 1/255):
            The scale of `do_rescale`.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Subtract `image_mean` and divide by `image_std`, per channel.
        image_mean (`list[float]`, *optional*):
            One value per channel. Defaults to ImageNet's mean for 3 channels, 0.449 (the mean of its three
            values) for every channel otherwise.
        image_std (`list[float]`, *optional*):
            One value per channel. Defaults to ImageNet's standard deviation for 3 channels, 0.226 for
            every channel otherwise.
        do_reduce_labels (`bool`, *optional*, defaults to `False`):
            Segmentation maps use 0 for "other" (ADE20K): 0 becomes 255 (ignored) and every id moves down one.
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the model input: see `to_array` for how images of each kind are read.
        resize_protocol (`str`, *optional*, defaults to `"segformer"`):
            Whose test-time resizing to reproduce: `"segformer"` (the above, on the normalised float image),
            `"mmseg"` (mmsegmentation's `Resize(scale=(long_side, short_side), keep_ratio=True)`, OpenCV's
            uint8 bilinear arithmetic), `"nvlabs"` (NVlabs' `AlignedResize`: mmseg's, then a second resize
            to multiples of `align`) or `"transformers"` (a `short_side` square, PIL's uint8 bilinear,
            logits resized once). The uint8 arithmetic applies to 8-bit images; others resize as floats.
        long_side (`int`, *optional*, defaults to 2048):
            The cap on the long side of the `"mmseg"` and `"nvlabs"` protocols.
        threshold (`float`, *optional*, defaults to 0.5):
            One-label (sigmoid) models: foreground where the probability is above this. A copy of the
            model config's `threshold`, here because `pipeline()` post-processes without the config.
        window (`int`, *optional*):
            The protocol runs the (resized) image in square sliding windows of this many pixels (the paper's
            Cityscapes protocol: 1024) and averages the overlaps; `None` runs the whole image at once.
            `segformer.inference` (so `segformer predict` and the training evaluation) reads it; one forward
            pass, as `pipeline()` runs, covers the whole image whatever it says.
        stride (`int`, *optional*):
            Step between two sliding windows (Cityscapes: 768); defaults to the window.
        crop_size (`int`, *optional*):
            Image classification: after resizing, keep the central `crop_size` square (DeiT's test protocol:
            short side 256, centre crop 224). `None` keeps the whole image, as segmentation needs.

    Example:

    ```python
    >>> from PIL import Image
    >>> from segformer import SegFormerImageProcessor

    >>> processor = SegFormerImageProcessor(short_side=512)
    >>> processor(images=Image.new("RGB", (640, 480)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 512, 704])
    ```
    """

    model_input_names = ["pixel_values"]
    # Class-level defaults as well: transformers 5.x saves a None (`short_side=None`: keep the size) only
    # where the class default is not None.
    do_resize = True
    short_side = 512
    align = 32
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD
    do_reduce_labels = False
    num_channels = 3
    resize_protocol = "segformer"
    long_side = 2048
    threshold = 0.5
    window = None
    stride = None
    crop_size = None

    def __init__(
        self,
        do_resize: bool = True,
        short_side: int | None = 512,
        align: int = 32,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean=None,
        image_std=None,
        do_reduce_labels: bool = False,
        num_channels: int = 3,
        resize_protocol: str = "segformer",
        long_side: int = 2048,
        threshold: float = 0.5,
        window: int | None = None,
        stride: int | None = None,
        crop_size: int | None = None,
        **kwargs,
    ):
        # transformers' SegformerImageProcessor configs (the official checkpoints) resize to a fixed
        # `size`; their short side is the protocol's. The other keys of theirs have no meaning here.
        size = kwargs.pop("size", None)
        if isinstance(size, dict) and short_side == 512:
            short_side = size.get("shortest_edge") or min(size.get("height", 512), size.get("width", 512))
        for key in ("resample", "image_processor_type", "reduce_labels"):
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        self.do_resize = do_resize
        self.short_side = short_side
        self.align = align
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"`num_channels` must be a positive integer, got {num_channels!r}.")
        default_mean, default_std = default_mean_std(num_channels)
        self.image_mean = list(default_mean if image_mean is None else image_mean)
        self.image_std = list(default_std if image_std is None else image_std)
        self.do_reduce_labels = do_reduce_labels
        self.num_channels = num_channels
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise ValueError(f"`threshold` must be a probability in (0, 1), got {threshold!r}.")
        self.threshold = threshold
        self.window = window
        self.stride = stride
        self.crop_size = crop_size
        for name in ("window", "stride", "crop_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"`{name}` must be a positive number of pixels or None, got {value!r}.")
        if stride is not None and window is None:
            raise ValueError("`stride` is the step of sliding windows: give `window` too.")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != num_channels:
                raise ValueError(
                    f"`{name}` has {len(getattr(self, name))} values but the images have num_channels={num_channels}: "
                    "give one per channel."
                )
        if any(not value > 0 for value in self.image_std):
            raise ValueError(f"`image_std` must be positive, got {self.image_std}.")
        if short_side is not None and (isinstance(short_side, bool) or not isinstance(short_side, int) or short_side <= 0):
            raise ValueError(f"`short_side` must be a positive number of pixels or None, got {short_side!r}.")
        if isinstance(align, bool) or not isinstance(align, int) or align <= 0:
            raise ValueError(f"`align` must be a positive integer, got {align!r}.")
        if resize_protocol not in PROTOCOLS:
            raise ValueError(f"`resize_protocol` must be one of {', '.join(PROTOCOLS)}, got {resize_protocol!r}.")
        if isinstance(long_side, bool) or not isinstance(long_side, int) or long_side <= 0:
            raise ValueError(f"`long_side` must be a positive number of pixels, got {long_side!r}.")
        if resize_protocol != "segformer" and short_side is None:
            raise ValueError(f"The {resize_protocol!r} protocol resizes to `short_side`: give one, or use do_resize=False.")
        self.resize_protocol = resize_protocol
        self.long_side = long_side

    def resize_steps(self, height: int, width: int) -> list:
        """The sizes the protocol resizes an image of `height` x `width` to, in order (see `resize_segformer`)."""
        if self.short_side is None:  # this package's protocol at the image's own size, sides aligned
            return [resized_size(height, width, None, align=self.align)]
        rule = PROTOCOLS[self.resize_protocol].size_rule
        return resize_steps(height, width, rule, self.short_side, self.long_side, self.align)

    def input_size(self, height: int, width: int) -> tuple:
        """The size the model sees for an image of `height` x `width`."""
        size = self.resize_steps(height, width)[-1] if self.do_resize else (height, width)
        return tuple(min(side, self.crop_size) for side in size) if self.crop_size else size

    def pixel_values(self, image, do_resize: bool | None = None) -> torch.Tensor:
        """One image -> normalised (C, H, W) float32 tensor, resized unless `do_resize` is False, then
        centre-cropped to `crop_size` where it is set."""
        pixels = self._resized(image, do_resize)
        if not self.crop_size:
            return pixels
        height, width = pixels.shape[-2:]
        top, left = max(0, (height - self.crop_size) // 2), max(0, (width - self.crop_size) // 2)
        return pixels[:, top : top + self.crop_size, left : left + self.crop_size]

    def _resized(self, image, do_resize: bool | None) -> torch.Tensor:
        array = to_array(image, self.num_channels)
        mean, std = (self.image_mean, self.image_std) if self.do_normalize else (0.0, 1.0)
        rescale_factor = self.rescale_factor if self.do_rescale else 1.0
        if not (do_resize if do_resize is not None else self.do_resize):
            return normalize(array, mean, std, rescale_factor)
        steps = self.resize_steps(*array.shape[:2])
        resample = UINT8_RESAMPLERS.get(PROTOCOLS[self.resize_protocol].resample)
        pixels = as_uint8(array) if resample is not None else None
        if pixels is not None:  # the source framework resizes the 8-bit image, before normalising
            for size in steps:
                pixels = resample(pixels, size)
            return normalize(pixels, mean, std, rescale_factor)
        return resize(normalize(array, mean, std, rescale_factor)[None], steps[-1])[0]

    def label_map(self, segmentation_map, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        """A mask of class ids as a (H, W) int64 tensor at its own size (metrics are measured there)."""
        label = np.asarray(segmentation_map, dtype=np.int64)
        if label.ndim != 2:
            raise ValueError(f"A segmentation map must be (height, width) class ids, got shape {label.shape}.")
        return torch.from_numpy(reduce_labels(label, ignore_index) if self.do_reduce_labels else label)

    def preprocess(self, images, segmentation_maps=None, return_tensors=None, do_resize: bool | None = None, **kwargs):
        """`pixel_values` (B, C, H, W) of one image or a list of images of one resized size, and `labels`
        (B, H, W) from `segmentation_maps` at their own size."""
        if kwargs:
            raise TypeError(f"SegFormerImageProcessor got unexpected arguments {sorted(kwargs)}.")
        images = images if isinstance(images, (list, tuple)) else [images]
        pixels = [self.pixel_values(image, do_resize) for image in images]
        sizes = {tuple(p.shape[-2:]) for p in pixels}
        if len(sizes) > 1:
            raise ValueError(
                f"The images become model inputs of different sizes {sorted(sizes)} and cannot be batched: "
                "process them one at a time, or use `segformer.inference.segment`, which groups them by size."
            )
        data = {"pixel_values": torch.stack(pixels)}
        if segmentation_maps is not None:
            maps = segmentation_maps if isinstance(segmentation_maps, (list, tuple)) else [segmentation_maps]
            labels = [self.label_map(m) for m in maps]
            if len({tuple(label.shape) for label in labels}) > 1:
                raise ValueError("The segmentation maps have different sizes and cannot be batched.")
            data["labels"] = torch.stack(labels)
        if return_tensors in (None, "np"):
            data = {key: value.numpy() for key, value in data.items()}
        elif return_tensors != "pt":
            raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {return_tensors!r}.")
        return BatchFeature(data=data)

    def __call__(self, images, segmentation_maps=None, **kwargs):
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def post_process_semantic_segmentation(self, outputs, target_sizes: list | None = None) -> list:
        """Model outputs -> one (H, W) label map per image of `target_sizes` ((height, width) of each
        original image), with the logits resized as the evaluation resizes them; without `target_sizes`,
        label maps at the logits' size."""
        logits = outputs.logits if hasattr(outputs, "logits") else outputs
        if self.crop_size:
            raise ValueError("This processor centre-crops (`crop_size`, for image classification): its inputs do not "
                             "cover the whole image, so there is no label map of it. Set crop_size=None to segment.")
        if target_sizes is None:
            return logits_to_label_maps(logits, [tuple(logits.shape[-2:])] * len(logits), threshold=self.threshold)
        target_sizes = [tuple(int(side) for side in size) for size in target_sizes]
        if not PROTOCOLS[self.resize_protocol].logits_via_input:
            return logits_to_label_maps(logits, target_sizes, threshold=self.threshold)
        input_sizes = [self.input_size(*size) for size in target_sizes]
        return logits_to_label_maps(logits, target_sizes, input_sizes, threshold=self.threshold)


__all__ = ["SegFormerImageProcessor"]
