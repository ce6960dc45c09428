"""Inference beyond one forward pass: label maps at the original image size, the paper's test protocols
and test-time augmentation.

- Whole image (the paper's ADE20K protocol): resize keeping the aspect ratio so that the short side is
  `short_side` (512), round both sides up to a multiple of 32, run once.
- Sliding window (the paper's Cityscapes protocol): windows of `window` pixels (1024) every `stride`
  pixels (768), each window's logits upsampled to the window and the overlaps averaged. The model only
  ever sees one window, so its memory is bounded by the window size, whatever the image size.
- Test-time augmentation: the image at several scales of the short side, optionally also mirrored;
  the softmax outputs of all passes, resized to the image, are averaged.

Every function takes normalised `pixel_values` (transformers' `SegformerImageProcessor` with
`do_resize=False`); the resizing of the protocols happens here, on the tensors.
"""

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class InferenceSettings:
    """How to turn an image into a label map.

    Args:
        short_side: resize so that the short side has this many pixels (aspect ratio kept); None keeps
            the image size.
        align: round the resized sides up to a multiple of this (32: every stage divides evenly).
        window: side of the sliding window in pixels; None runs the whole (resized) image at once.
        stride: step between windows; defaults to the window (no overlap).
        scales: multipliers of the short side (or of the image size), one pass each.
        flip: also run every scale mirrored left-right.
    """

    short_side: int | None = 512
    align: int = 32
    window: int | None = None
    stride: int | None = None
    scales: tuple = (1.0,)
    flip: bool = False

    def __post_init__(self):
        for name in ("short_side", "window", "stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"`{name}` must be a positive number of pixels or None, got {value!r}.")
        if not isinstance(self.align, int) or self.align <= 0:
            raise ValueError(f"`align` must be a positive integer, got {self.align!r}.")
        if self.stride is not None and self.window is None:
            raise ValueError("`stride` only applies to sliding-window inference: give `window` too.")
        if not self.scales or any(not scale > 0 for scale in self.scales):
            raise ValueError(f"`scales` must be positive numbers, got {self.scales!r}.")


# The paper's test protocols (Xie et al. 2021, section 4.1), single-scale.
PROTOCOLS = {
    "ade20k": InferenceSettings(short_side=512),
    "cityscapes": InferenceSettings(short_side=1024, window=1024, stride=768),
}
# The paper's multi-scale test: short side x 0.5 ... 1.75, and mirrored.
MULTI_SCALE = dict(scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True)


def aligned_size(height: int, width: int, short_side: int | None, scale: float = 1.0, align: int = 32) -> tuple:
    """(height, width) with the short side at `short_side * scale` (or the size times `scale` when
    `short_side` is None), aspect ratio kept, each side rounded up to a multiple of `align`."""
    factor = scale * (short_side / min(height, width) if short_side else 1.0)
    return tuple(math.ceil(round(side * factor) / align) * align for side in (height, width))


def resize(tensor: torch.Tensor, size: tuple) -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def window_starts(length: int, window: int, stride: int) -> list:
    """Offsets of the windows along one side: every `stride`, the last one flush with the end."""
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return [min(index * stride, length - window) for index in range(count)]


def model_logits(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The model's logits upsampled to the input size, in float32 for the averaging."""
    logits = model(pixel_values.to(model.dtype)).logits
    return resize(logits.float(), pixel_values.shape[-2:])


def sliding_window_logits(model, pixel_values: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Logits at the input size, averaged over overlapping windows run one at a time."""
    batch_size, _, height, width = pixel_values.shape
    logits = counts = None
    for top in window_starts(height, window, stride):
        for left in window_starts(width, window, stride):
            crop = pixel_values[..., top : top + window, left : left + window]
            crop_logits = model_logits(model, crop)
            if logits is None:
                logits = crop_logits.new_zeros(batch_size, crop_logits.shape[1], height, width)
                counts = crop_logits.new_zeros(1, 1, height, width)
            logits[..., top : top + window, left : left + window] += crop_logits
            counts[..., top : top + window, left : left + window] += 1
    return logits.div_(counts)  # in place: the image-sized buffers are the only ones that grow with the image


def probabilities_(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities, computed in place of the logits (no second image-sized tensor); one label
    means a sigmoid (background, foreground) pair."""
    if logits.shape[1] == 1:
        foreground = logits.sigmoid_()
        return torch.cat([1 - foreground, foreground], dim=1)
    logits = logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()  # the softmax, step by step
    return logits.div_(logits.sum(dim=1, keepdim=True))


@torch.inference_mode()
def segment_probabilities(model, pixel_values: torch.Tensor, settings: InferenceSettings = InferenceSettings()):
    """(B, classes, H, W) probabilities at the size of `pixel_values`, averaged over the passes that
    `settings` asks for (scales x flips), each run whole or in sliding windows."""
    height, width = pixel_values.shape[-2:]
    total = None
    for scale in settings.scales:
        resized = resize(pixel_values, aligned_size(height, width, settings.short_side, scale, settings.align))
        for flip in (False, True) if settings.flip else (False,):
            inputs = resized.flip(-1) if flip else resized
            if settings.window is None:
                logits = model_logits(model, inputs)
            else:
                logits = sliding_window_logits(model, inputs, settings.window, settings.stride or settings.window)
            logits = resize(logits.flip(-1) if flip else logits, (height, width))
            total = probabilities_(logits) if total is None else total.add_(probabilities_(logits))
    return total.div_(len(settings.scales) * (2 if settings.flip else 1))


@torch.inference_mode()
def segment(model, images: list, settings: InferenceSettings = InferenceSettings(), batch_size: int = 1) -> list:
    """Label maps (H, W) for a list of normalised (3, H, W) images of any sizes. Images of the same
    size run together, up to `batch_size` at a time."""
    by_size = defaultdict(list)
    for index, image in enumerate(images):
        if image.ndim != 3:
            raise ValueError(f"Image {index} has shape {tuple(image.shape)}; expected (channels, height, width).")
        by_size[tuple(image.shape[-2:])].append(index)
    label_maps = [None] * len(images)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = torch.stack([images[i] for i in chunk]).to(model.device)
            for i, label_map in zip(chunk, segment_probabilities(model, batch, settings).argmax(dim=1)):
                label_maps[i] = label_map
    return label_maps


def post_process_semantic_segmentation(logits: torch.Tensor, target_sizes: list | None = None) -> list:
    """Logits (B, classes, h, w) of a batch -> one (H, W) label map per image, upsampled to that image's
    (H, W) in `target_sizes` (images of different sizes resized to one batch) before the argmax.
    Without `target_sizes` the maps keep the logits' size. One label: foreground where its logit > 0."""
    if target_sizes is not None and len(target_sizes) != len(logits):
        raise ValueError(f"Got {len(target_sizes)} target sizes for a batch of {len(logits)} logits: give one per image.")
    label_maps = []
    for index, image_logits in enumerate(logits):
        size = tuple(target_sizes[index]) if target_sizes is not None else image_logits.shape[-2:]
        image_logits = resize(image_logits[None].float(), size)[0]
        label_maps.append((image_logits[0] > 0).long() if len(image_logits) == 1 else image_logits.argmax(dim=0))
    return label_maps
