"""How each framework that trains SegFormer resizes an image at test time, to the pixel.

A converted model reproduces its source's label maps only if it sees the pixels its source saw. The
frameworks differ in three things, which a `Protocol` holds:

- the size: this package and the paper round the short side to `short_side` and both sides up to a
  multiple of 32; mmsegmentation (`Resize(scale=(2048, 512), keep_ratio=True)`, mmcv's `rescale_size`)
  scales by min(long_side / long, short_side / short) and rounds each side with int(x + 0.5); NVlabs'
  `AlignedResize` does mmseg's resize and then a second one up to multiples of 32; transformers'
  processor squashes every image to a fixed square;
- the arithmetic: this package resizes the normalised float image (torch, bilinear); mmseg and NVlabs
  resize the uint8 image with OpenCV's bilinear `cv2.resize`, whose fixed-point arithmetic
  `opencv_bilinear` reproduces bit for bit (so OpenCV is not needed); transformers resizes the uint8 image
  with PIL's bilinear filter;
- the logits: every framework but transformers resizes them to the model-input size first and then to
  the image's (two bilinear resizes, which round differently from one).

Measured with mmsegmentation 1.2.2 on a seeded random model (tests/test_mmseg.py, docs/conversion-sources.md):
resizing the float image at mmseg's sizes instead of with OpenCV's uint8 arithmetic flips 0.2-0.4 % of the
pixels; with this reproduction every pixel equals mmseg's.

This file is uploaded to the Hub with the image processor: it imports only numpy and PIL.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# OpenCV's bilinear coefficients are integers scaled by 2^11 (`INTER_RESIZE_COEF_BITS`).
COEF_BITS = 11


@dataclass(frozen=True)
class Protocol:
    """One framework's test-time protocol (see the module docstring)."""

    description: str
    size_rule: str  # "short-side", "keep-ratio", "keep-ratio-aligned" or "square"
    resample: str  # "float" (torch, normalised image), "opencv" or "pil" (uint8 image)
    logits_via_input: bool  # logits resized to the model-input size before the image's


PROTOCOLS = {
    "segformer": Protocol("this package and the paper", "short-side", "float", True),
    "mmseg": Protocol("mmsegmentation 1.x Resize(keep_ratio=True)", "keep-ratio", "opencv", True),
    "nvlabs": Protocol("NVlabs/SegFormer AlignedResize", "keep-ratio-aligned", "opencv", True),
    "transformers": Protocol("transformers' SegformerImageProcessor", "square", "pil", False),
}


def keep_ratio_size(height: int, width: int, long_side: int, short_side: int) -> tuple:
    """mmcv's `rescale_size`: the largest scale that fits `long_side` x `short_side`, sides rounded half up."""
    factor = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_steps(height: int, width: int, rule: str, short_side: int, long_side: int, align: int) -> list:
    """The sizes an image of `height` x `width` is resized to, in order (NVlabs resizes twice); the last is
    the model input's."""
    if rule == "short-side":
        factor = short_side / min(height, width)
        return [tuple(math.ceil(round(side * factor) / align) * align for side in (height, width))]
    if rule == "square":
        return [(short_side, short_side)]
    size = keep_ratio_size(height, width, long_side, short_side)
    if rule == "keep-ratio":
        return [size]
    if rule == "keep-ratio-aligned":
        return [size, tuple(math.ceil(side / align) * align for side in size)]
    raise ValueError(f"Unknown size rule {rule!r}.")


def _opencv_taps(source: int, target: int, clamp: bool) -> tuple:
    """Source indices and integer weights of OpenCV's bilinear resize along one axis.

    OpenCV maps the centre of output pixel d to (d + 0.5) / scale - 0.5 in float32 and rounds both weights
    to multiples of 2^-11. Along x it pins positions outside the image to the edge pixel (weight 0 to the
    other tap); along y it keeps the weights and clamps the rows instead, which rounds differently.
    """
    scale = 1.0 / (target / source)  # as OpenCV: the inverse of its inverse scale, in double
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    if clamp:
        outside = (first < 0) | (first >= source - 1)
        fraction[outside] = 0
        first = np.clip(first, 0, source - 1)
    one = np.float32(1 << COEF_BITS)
    weight0 = np.rint((np.float32(1) - fraction) * one).astype(np.int64)
    weight1 = np.rint(fraction * one).astype(np.int64)
    return np.clip(first, 0, source - 1), np.clip(first + 1, 0, source - 1), weight0, weight1


def opencv_bilinear(image: np.ndarray, size: tuple) -> np.ndarray:
    """`cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)` of an (H, W, C) uint8 image,
    reproduced bit for bit: checked against OpenCV 4.14 on 300 random sizes up and down (23.2 M values, all
    equal; scripts/make_mmseg_fixture.py), and in tests/test_mmseg.py on stored OpenCV outputs.

    A horizontal pass sums the two taps times their 11-bit weights exactly; the vertical pass is OpenCV's
    SIMD one, which drops 4 bits of each row before the 16-bit multiply, keeps the high 16 bits of each
    product and rounds the sum by 2 bits.
    """
    height, width = size
    x0, x1, alpha0, alpha1 = _opencv_taps(image.shape[1], width, clamp=True)
    y0, y1, beta0, beta1 = _opencv_taps(image.shape[0], height, clamp=False)
    pixels = image.astype(np.int64)
    rows = pixels[:, x0] * alpha0[None, :, None] + pixels[:, x1] * alpha1[None, :, None]  # (h, W, C)
    beta0, beta1 = beta0[:, None, None], beta1[:, None, None]
    out = (((rows[y0] >> 4) * beta0) >> 16) + (((rows[y1] >> 4) * beta1) >> 16)  # (H, W, C)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def pil_bilinear(image: np.ndarray, size: tuple) -> np.ndarray:
    """PIL's bilinear resize of an (H, W, C) uint8 image, one band at a time (any number of channels)."""
    height, width = size
    bands = [
        Image.fromarray(np.ascontiguousarray(image[..., c])).resize((width, height), Image.BILINEAR)
        for c in range(image.shape[-1])
    ]
    return np.stack([np.asarray(band) for band in bands], axis=-1)


UINT8_RESAMPLERS = {"opencv": opencv_bilinear, "pil": pil_bilinear}


def as_uint8(array: np.ndarray) -> np.ndarray | None:
    """The (H, W, C) float array of 0..255 values as uint8 when it holds 8-bit values exactly, else None
    (16-bit and float images have no uint8 arithmetic to reproduce: they are resized as floats)."""
    if array.min(initial=0) < 0 or array.max(initial=0) > 255 or not np.array_equal(array, np.round(array)):
        return None
    return array.astype(np.uint8)
