"""Inference beyond one forward pass: label maps at the original image size, the paper's test protocols
and test-time augmentation.

- Whole image (the paper's ADE20K protocol): resize keeping the aspect ratio so that the short side is
  `short_side` (512), round both sides up to a multiple of 32, run once.
- Sliding window (the paper's Cityscapes protocol): windows of `window` pixels (1024) every `stride`
  pixels (768), each window's logits upsampled to the window and the overlaps averaged. The model only
  ever sees one window, so its memory is bounded by the window size, whatever the image size.
- Test-time augmentation: the image at several scales of the short side, optionally also mirrored;
  the softmax outputs of all passes, resized to the image, are averaged.

A converted model's processor may instead describe its source framework's protocol (mmsegmentation,
NVlabs, transformers: `resize_protocol`), which resizes the 8-bit image with that framework's arithmetic
before normalising it; `segment_images` then runs the processor's own single pass, as `pipeline()` does.

Every other function takes normalised `pixel_values` at the image's own size (`SegFormerImageProcessor.pixel_values`
with `do_resize=False`); the resizing of the protocols happens here, on the tensors, with the processor's
functions. A single pass (one scale, no flip) turns logits into label maps exactly as the processor's
`post_process_semantic_segmentation` does, so `segment` and `pipeline("image-segmentation")` agree pixel for
pixel; several passes average their softmax outputs at the image size.
"""

import copy
import math
from collections import defaultdict
from dataclasses import dataclass

import torch

from .errors import OptionError
from .image_processing_segformer import SegFormerImageProcessor, logits_to_label_maps, resize, resized_size
from .postprocessing_segformer import class_scores, label_map, window_map


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
        resize_protocol: "segformer" (this package's, all of the above), or a source framework's protocol that
            a converted model's processor runs ("mmseg", "nvlabs", "transformers"). Those are one whole pass
            over the resized image: test-time scales, flips, windows or no resizing run this package's.
        threshold: one-label (sigmoid) models: foreground where the probability is above this; None
            takes the model config's `threshold`.
    """

    short_side: int | None = 512
    align: int = 32
    window: int | None = None
    stride: int | None = None
    scales: tuple = (1.0,)
    flip: bool = False
    resize_protocol: str = "segformer"
    threshold: float | None = None

    @classmethod
    def from_processor(cls, processor: SegFormerImageProcessor, **overrides) -> "InferenceSettings":
        """The protocol a saved model's processor describes, sliding window included (a processor saved before
        it had `window` runs whole images), with overrides."""
        short_side = processor.short_side if processor.do_resize else None
        settings = {"short_side": short_side, "align": processor.align if processor.do_resize else 1}
        if processor.do_resize:
            settings["resize_protocol"] = processor.resize_protocol
        # A recorded sliding window (older processor files have none: whole images).
        settings.update(window=getattr(processor, "window", None), stride=getattr(processor, "stride", None))
        return cls(**{**settings, **overrides})

    @property
    def single_pass(self) -> bool:
        return len(self.scales) == 1 and not self.flip

    def __post_init__(self):
        for name in ("short_side", "window", "stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise OptionError(f"`{name}` must be a positive number of pixels or None, got {value!r}.")
        if not isinstance(self.align, int) or self.align <= 0:
            raise OptionError(f"`align` must be a positive integer, got {self.align!r}.")
        if self.stride is not None and self.window is None:
            raise OptionError("`stride` only applies to sliding-window inference: give `window` too.")
        if not self.scales or any(not scale > 0 for scale in self.scales):
            raise OptionError(f"`scales` must be positive numbers, got {self.scales!r}.")
        if not self.single_pass or self.window is not None or self.short_side is None:
            object.__setattr__(self, "resize_protocol", "segformer")  # see the field's description
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise OptionError(f"`threshold` must be a probability in (0, 1), got {self.threshold!r}.")


# The paper's test protocols (Xie et al. 2021, section 4.1), single-scale.
PROTOCOLS = {
    "ade20k": InferenceSettings(short_side=512),
    "cityscapes": InferenceSettings(short_side=1024, window=1024, stride=768),
}
# The paper's multi-scale test: short side x 0.5 ... 1.75, and mirrored.
MULTI_SCALE = dict(scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True)


def window_starts(length: int, window: int, stride: int) -> list:
    """Offsets of the windows along one side: every `stride`, the last one flush with the end."""
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return [min(index * stride, length - window) for index in range(count)]


# On a CPU, a batch runs in micro-batches of at most this many input pixels. At 512x512 the stage-1
# activations of one image (16384 tokens x 4C channels in the Mix-FFN) already fill the caches: a bigger
# batch only adds cache misses, and the CPU attention kernel slows down per image. Eval mode has no batch
# statistics, so splitting does not change the outputs.
CPU_MICRO_BATCH_PIXELS = 512 * 512


def forward_logits(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """`model(pixel_values).logits` of an eval-mode model, the batch split into micro-batches on a CPU (a batch
    is then no slower per image than one image) and run whole on an accelerator."""
    pixel_values = pixel_values.to(model.dtype)
    size = len(pixel_values)
    if pixel_values.device.type == "cpu":
        size = max(1, CPU_MICRO_BATCH_PIXELS // (pixel_values.shape[-2] * pixel_values.shape[-1]))
    if size >= len(pixel_values):
        return model(pixel_values).logits
    return torch.cat([model(chunk).logits for chunk in pixel_values.split(size)])


def model_logits(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The model's logits upsampled to the input size, in float32 for the averaging."""
    logits = forward_logits(model, pixel_values)
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


def pass_logits(model, inputs: torch.Tensor, settings: "InferenceSettings") -> torch.Tensor:
    """Float logits at the size of `inputs`: one whole pass, or the average of sliding windows."""
    if settings.window is None:
        return model_logits(model, inputs)
    return sliding_window_logits(model, inputs, settings.window, settings.stride or settings.window)


@torch.inference_mode()
def segment_probabilities(model, pixel_values: torch.Tensor, settings: InferenceSettings = InferenceSettings()):
    """(B, classes, H, W) probabilities at the size of `pixel_values`, averaged over the passes that
    `settings` asks for (scales x flips), each run whole or in sliding windows."""
    height, width = pixel_values.shape[-2:]
    total = None
    for scale in settings.scales:
        resized = resize(pixel_values, resized_size(height, width, settings.short_side, scale, settings.align))
        for flip in (False, True) if settings.flip else (False,):
            logits = pass_logits(model, resized.flip(-1) if flip else resized, settings)
            logits = resize(logits.flip(-1) if flip else logits, (height, width))
            total = probabilities_(logits) if total is None else total.add_(probabilities_(logits))
    return total.div_(len(settings.scales) * (2 if settings.flip else 1))


@torch.inference_mode()
def segment_batch(model, pixel_values: torch.Tensor, settings: InferenceSettings = InferenceSettings()) -> list:
    """Label maps (H, W) of a batch of same-size normalised images. A single pass takes the argmax of the
    logits resized as `SegFormerImageProcessor.post_process_semantic_segmentation` resizes them; several
    passes take the argmax of the averaged probabilities."""
    height, width = pixel_values.shape[-2:]
    threshold = foreground_threshold(model, settings)
    if not settings.single_pass:
        probabilities = segment_probabilities(model, pixel_values, settings)
        if probabilities.shape[1] == 2 and model.config.num_labels == 1:
            return list((probabilities[:, 1] > threshold).long())
        return list(probabilities.argmax(dim=1))
    inputs = resize(pixel_values, resized_size(height, width, settings.short_side, settings.scales[0], settings.align))
    if settings.window is None:  # the logits go to post-processing as they are: it resizes only what decides a label
        logits = forward_logits(model, inputs)
        input_sizes = [tuple(inputs.shape[-2:])] * len(logits)
        return logits_to_label_maps(logits, [(height, width)] * len(logits), input_sizes, threshold=threshold)
    return sliding_window_label_maps(model, inputs, settings, (height, width), threshold)


def sliding_window_label_maps(model, inputs: torch.Tensor, settings: InferenceSettings, size: tuple, threshold: float) -> list:
    """The label maps at `size` of the windows' logits averaged at the size of `inputs` (`sliding_window_logits`
    followed by `logits_to_label_maps`), without building those logits: the windows' own logits side by side
    (a mosaic at the logits' resolution), and each window's resize, the average of the overlaps and the resize
    to `size` as one linear map per axis (`postprocessing_segformer.window_map`)."""
    height, width = inputs.shape[-2:]
    window, stride = settings.window, settings.stride or settings.window
    tops, lefts = window_starts(height, window, stride), window_starts(width, window, stride)
    grid = [
        [forward_logits(model, inputs[..., top : top + window, left : left + window]) for left in lefts] for top in tops
    ]  # fmt: skip
    mosaic = torch.cat([torch.cat(row, dim=-1) for row in grid], dim=-2)
    rows = window_map(tuple((top, min(window, height), row[0].shape[-2]) for top, row in zip(tops, grid)), height, size[0])
    cols = window_map(tuple((left, min(window, width), logits.shape[-1]) for left, logits in zip(lefts, grid[0])), width, size[1])
    return [label_map(class_scores(logits, threshold), rows, cols) for logits in mosaic]


def foreground_threshold(model, settings: InferenceSettings) -> float:
    """The probability above which a one-label model's pixel is foreground: the settings' or the config's."""
    return settings.threshold if settings.threshold is not None else getattr(model.config, "threshold", 0.5)


def same_size_batches(tensors: list, batch_size: int):
    """(indices, stacked batch) of the (C, H, W) `tensors` that share a size, up to `batch_size` at a time."""
    by_size = defaultdict(list)
    for index, tensor in enumerate(tensors):
        if tensor.ndim != 3:
            raise ValueError(f"Image {index} has shape {tuple(tensor.shape)}; expected (channels, height, width).")
        by_size[tuple(tensor.shape[-2:])].append(index)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            yield chunk, torch.stack([tensors[i] for i in chunk])


@torch.inference_mode()
def segment(model, images: list, settings: InferenceSettings = InferenceSettings(), batch_size: int = 1) -> list:
    """Label maps (H, W) for a list of normalised (C, H, W) images of any sizes. Images of the same
    size run together, up to `batch_size` at a time."""
    label_maps = [None] * len(images)
    for chunk, batch in same_size_batches(images, batch_size):
        for i, label_map in zip(chunk, segment_batch(model, batch.to(model.device), settings)):
            label_maps[i] = label_map
    return label_maps


def image_size(image) -> tuple:
    """(height, width) of a PIL image or an (H, W[, C]) array."""
    return (image.height, image.width) if hasattr(image, "height") else tuple(image.shape[:2])


def source_processor(processor: SegFormerImageProcessor, settings: InferenceSettings) -> SegFormerImageProcessor:
    """`processor` running a source framework's protocol (`settings.resize_protocol` at `settings.short_side`)."""
    if (settings.resize_protocol, settings.short_side) == (processor.resize_protocol, processor.short_side):
        return processor
    processor = copy.copy(processor)
    processor.resize_protocol, processor.short_side = settings.resize_protocol, settings.short_side
    return processor


def model_input(processor: SegFormerImageProcessor, settings: InferenceSettings, image) -> torch.Tensor:
    """The normalised (C, H, W) tensor `segment_inputs` takes for `image`: at the image's own size for this
    package's protocols (they resize the tensor), or resized by a source framework's protocol (with its
    uint8 arithmetic, before normalising)."""
    if settings.resize_protocol == "segformer":
        return processor.pixel_values(image, do_resize=False)
    return source_processor(processor, settings).pixel_values(image, do_resize=True)


@torch.inference_mode()
def segment_inputs(model, processor, settings: InferenceSettings, pixel_values: torch.Tensor, image_sizes: list) -> list:
    """Label maps (H, W) of a batch of same-size `model_input`s of images of `image_sizes`: `segment_batch`
    for this package's protocols; for a source framework's, the processor's single pass and its
    `post_process_semantic_segmentation`, what `pipeline()` runs."""
    if settings.resize_protocol == "segformer":
        return segment_batch(model, pixel_values, settings)
    logits = forward_logits(model, pixel_values).float()
    return source_processor(processor, settings).post_process_semantic_segmentation(logits, image_sizes)


def segment_images(
    model, processor: SegFormerImageProcessor, images: list, settings: InferenceSettings = None, batch_size: int = 1
) -> list:
    """Label maps (H, W numpy arrays) of PIL images or arrays: normalised by `processor`, segmented with
    `settings` (default: the processor's own protocol, what `pipeline()` runs)."""
    settings = settings or InferenceSettings.from_processor(processor)
    inputs = [model_input(processor, settings, image) for image in images]
    label_maps = [None] * len(images)
    for chunk, batch in same_size_batches(inputs, batch_size):
        sizes = [image_size(images[i]) for i in chunk]
        for i, label_map in zip(chunk, segment_inputs(model, processor, settings, batch.to(model.device), sizes)):
            label_maps[i] = label_map.cpu().numpy()
    return label_maps


def post_process_semantic_segmentation(
    logits: torch.Tensor, target_sizes: list | None = None, threshold: float = 0.5
) -> list:
    """Logits (B, classes, h, w) of a batch -> one (H, W) label map per image, upsampled to that image's
    (H, W) in `target_sizes` (images of different sizes resized to one batch) before the argmax.
    Without `target_sizes` the maps keep the logits' size. One label: foreground where its probability is
    above `threshold`."""
    if target_sizes is None:
        target_sizes = [tuple(logits.shape[-2:])] * len(logits)
    return logits_to_label_maps(logits, [tuple(size) for size in target_sizes], threshold=threshold)
