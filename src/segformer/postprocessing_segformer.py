"""Label maps from SegFormer's logits without resizing every class to full resolution, equal to resizing the
logits and then taking the argmax.

The definition (the original code's, and what training evaluates): the logits (C, h, w) are resized
bilinearly to the model-input size, then to the image size, and each pixel takes the class with the
largest value. Done as written it costs as much as the model itself: C maps at full resolution, twice.

Every bilinear resize (align_corners=False, no antialiasing) is linear and separable, with non-negative
weights that sum to one for each output; so is a chain of them. The definition is one map
`value_c = A @ scores_c @ B.T`, each output pixel reading a few logit pixels (its taps). Hence
(docs/postprocessing.md has the argument and the measurements):

1. Where all the taps of a pixel have the same best class, that class wins there: a convex combination
   of points where it is largest keeps it largest. One argmax at the logits' resolution settles every
   pixel away from class boundaries.
2. On boundaries, only the taps' own best classes are scored (exactly, from the composed weights); that
   is the label where it beats the second-best scores resized likewise, a bound on every other class.
3. Where the bound fails, every class that can still win is scored: those whose largest score on the taps
   reaches the value already found.

So no C-channel map is built at full resolution, and the labels are the definition's wherever two classes
are not within float32 rounding of each other (the rule the tests assert: equal where the top-2 margin is
at least 1e-4).

This file is uploaded to the Hub next to the model files: it imports only torch.
"""

import math
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

# Pixels whose bound fails are scored in chunks of at most this many gathered values, so memory stays
# bounded even where every pixel is in doubt (random logits).
CHUNK_VALUES = 1 << 22


class AxisMap(NamedTuple):
    """A 1-D linear map onto L outputs. `index` (L, k): the sources each output reads, ascending, padded by
    repeating the first; `weight` (L, k) float32: their weights, zero on the padding. The outputs grouped by
    the sources they read: `sources` (P, k) the distinct rows of `index`, `of` (L,) each output's row there."""

    index: torch.Tensor
    weight: torch.Tensor
    sources: torch.Tensor
    of: torch.Tensor

    def to(self, device) -> "AxisMap":
        return AxisMap(*(tensor.to(device) for tensor in self))


def resize_weights(weights: torch.Tensor, length: int) -> torch.Tensor:
    """(n, L) weights of n sources over L positions, followed by a bilinear resize of the axis to
    `length` (as `F.interpolate(..., mode="bilinear", align_corners=False)` resizes it); no resize
    when the length is already right, as `image_processing_segformer.resize` skips it."""
    if weights.shape[-1] == length:
        return weights
    return F.interpolate(weights[None], size=length, mode="linear", align_corners=False)[0]


def chain_weights(size: int, lengths) -> torch.Tensor:
    """(size, L) float64 weights of an axis of `size` resized through each of `lengths` in turn."""
    weights = torch.eye(size, dtype=torch.float64)
    for length in lengths:
        weights = resize_weights(weights, int(length))
    return weights


def axis_map(weights: torch.Tensor) -> AxisMap:
    """The sparse form of (n, L) weights: for each of the L outputs, the sources it reads and their weights."""
    weights = weights.T  # (L, n)
    output, source = (weights != 0).nonzero(as_tuple=True)  # by output, then source
    counts = torch.bincount(output, minlength=len(weights))
    index = torch.zeros(len(weights), int(counts.max()), dtype=torch.long)
    index[output, torch.arange(len(output)) - (counts.cumsum(0) - counts)[output]] = source
    used = torch.arange(index.shape[1]) < counts[:, None]
    index = torch.where(used, index, index[:, :1])  # padding repeats a source read, so tests on it stay tight
    # float32: the definition's own two float32 resizes round at the same order.
    weight = torch.where(used, weights.gather(1, index), 0.0).float()
    sources, of = torch.unique_consecutive(index, dim=0, return_inverse=True)
    return AxisMap(index, weight, sources, of)


@lru_cache(maxsize=64)
def resize_map(size: int, lengths: tuple) -> AxisMap:
    """The `AxisMap` of an axis of `size` resized through `lengths` (cached: a folder's images share sizes)."""
    return axis_map(chain_weights(size, lengths))


@lru_cache(maxsize=64)
def window_map(windows: tuple, size: int, target: int) -> AxisMap:
    """The `AxisMap` of sliding windows along an axis of `size` input pixels: each window, (start, length,
    logits length), has its logits resized to its length; where windows overlap their values are averaged;
    then the axis is resized to `target`. The sources are the windows' logits laid end to end (a mosaic).
    Still non-negative weights summing to one for every output, so `label_map` applies as it is."""
    weights = torch.zeros(sum(logits for _, _, logits in windows), size, dtype=torch.float64)
    offset = 0
    for start, length, logits in windows:
        weights[offset : offset + logits, start : start + length] = chain_weights(logits, [length])
        offset += logits
    weights /= weights.sum(0)  # each column sums to the number of windows over it: the average
    return axis_map(resize_weights(weights, target))


def logit(probability: float) -> float:
    """The logit whose sigmoid is `probability`: 0 for 0.5."""
    return math.log(probability / (1 - probability))


def class_scores(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(C, h, w) logits -> the float scores whose argmax is the label. The one place of the one-label
    decision: foreground where the sigmoid is above `threshold`, i.e. a constant background score of
    logit(threshold) ahead of the foreground logit (a tie goes to the first, background; a constant stays
    itself under bilinear resizing)."""
    logits = logits.float()
    if len(logits) == 1:
        return torch.cat([torch.full_like(logits, logit(threshold)), logits])
    return logits


def top_class(scores: torch.Tensor) -> torch.Tensor:
    """(C, N) scores -> (N,) index of the largest (the first of equal ones, as argmax). Built from reductions
    over the classes that run vectorized on a CPU, where torch's argmax over a leading dimension is a scalar
    loop several times slower."""
    num_classes = len(scores)
    if num_classes > torch.iinfo(torch.int16).max:
        return scores.argmax(0)
    is_top = scores == scores.amax(0)
    countdown = torch.arange(num_classes - 1, -1, -1, dtype=torch.int16, device=scores.device)[:, None]
    return (num_classes - 1) - (is_top * countdown).amax(0).long()


def second_score(scores: torch.Tensor, best: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The largest score of the classes other than `best` at `positions` of (C, N) scores (the top score
    again where two classes share it)."""
    block = scores.index_select(1, positions)
    return block.scatter_(0, best[positions][None], -torch.inf).amax(0)


def label_map(scores: torch.Tensor, rows: AxisMap, cols: AxisMap) -> torch.Tensor:
    """The argmax over classes of `A @ scores[c] @ B.T`, with A (H, n) given by `rows` and B (W, m) by
    `cols`: (C, n, m) scores -> (H, W) int64 labels."""
    num_classes, n, m = scores.shape
    rows, cols = rows.to(scores.device), cols.to(scores.device)
    flat = scores.reshape(num_classes, n * m)
    best = top_class(flat)
    # Small integers for the agreement test, -1 where the taps of a group of outputs disagree.
    small = best.to(torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32).view(n, m)
    (num_row_groups, kr), (num_col_groups, kc) = rows.sources.shape, cols.sources.shape
    across = small.index_select(0, rows.sources.T.flatten()).view(kr, num_row_groups, m)
    across = across[0].masked_fill((across != across[0]).any(0), -1)  # (row groups, m)
    block = across.index_select(1, cols.sources.T.flatten()).view(num_row_groups, kc, num_col_groups)
    block = block[:, 0].masked_fill((block != block[:, :1]).any(1), -1)  # (row groups, column groups)
    labels = block.long().index_select(0, rows.of).index_select(1, cols.of)  # (H, W), -1 on boundaries
    doubtful = (labels.view(-1) < 0).nonzero()[:, 0]
    if len(doubtful):
        _settle(flat, best, small.view(-1), _pixels(doubtful, labels.shape[1], m, rows, cols), labels)
    return labels


class _Pixels(NamedTuple):
    """Output pixels to settle, each a column: where they are in the label map, the flat positions of their
    T taps in the scores and the taps' weights. Pixels last, so that work over the taps or the candidates
    runs vectorized across the pixels."""

    where: torch.Tensor  # (P,)
    taps: torch.Tensor  # (T, P)
    weight: torch.Tensor  # (T, P)

    def __getitem__(self, part):
        return _Pixels(self.where[part], self.taps[:, part], self.weight[:, part])


def _pixels(where: torch.Tensor, width: int, m: int, rows: AxisMap, cols: AxisMap) -> _Pixels:
    row, col = where // width, where % width
    row_taps, col_taps = rows.index.T[:, row], cols.index.T[:, col]  # (kr, P), (kc, P)
    taps = row_taps[:, None] * m + col_taps[None]
    weight = rows.weight.T[:, row][:, None] * cols.weight.T[:, col][None]
    return _Pixels(where, taps.flatten(0, 1), weight.flatten(0, 1))


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`values[index]` of a 1-D tensor, by `index_select` (several times faster than indexing on a CPU)."""
    return values.index_select(0, index.flatten()).view(index.shape)


def _settle(flat, best, small, pixels: _Pixels, labels):
    """The exact labels of the pixels whose taps disagree on the best class (see the module's docstring);
    `best` the class of each source, `small` the same in a narrow integer type."""
    classes = _gather(small, pixels.taps)  # (T, P): the taps' own best classes
    low, high = classes.aminmax(dim=0)
    classes, low, high = classes.long(), low.long(), high.long()
    # Most pixels are on a boundary of two classes: score those two everywhere, then every tap's class
    # (ascending; repeats are harmless) where three or more meet.
    top = _score(flat, pixels, torch.stack([low, high]), labels)
    junction = ((classes != low) & (classes != high)).any(0).nonzero()[:, 0]
    if len(junction):
        top[junction] = _score(flat, pixels[junction], classes[:, junction].sort(0).values, labels)
    # The second-best scores resized bound every class that is best on no tap.
    read = torch.zeros(len(best), dtype=torch.bool, device=best.device)
    read[pixels.taps.flatten()] = True
    positions = read.nonzero()[:, 0]
    second = torch.empty(len(best), device=flat.device).index_put_((positions,), second_score(flat, best, positions))
    doubtful = (top <= (_gather(second, pixels.taps) * pixels.weight).sum(0)).nonzero()[:, 0]
    if len(doubtful):
        _score_plausible(flat, pixels[doubtful], top[doubtful], labels)


def _score(flat, pixels: _Pixels, candidates: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Writes into `labels` the best of the (K, P) ascending `candidates` at each pixel; returns its value."""
    taps = _gather(flat.view(-1), candidates[:, None] * flat.shape[1] + pixels.taps)  # (K, T, P)
    top, pick = (taps * pixels.weight).sum(1).max(0)  # the first of equal values: the lowest class, as argmax
    labels.view(-1)[pixels.where] = candidates.gather(0, pick[None])[0]
    return top


def _score_plausible(flat, pixels: _Pixels, found: torch.Tensor, labels):
    """Scores, at each pixel, every class whose largest score on the taps reaches the value `found` there (a
    convex combination is at most its largest term): a few classes but for near-random logits."""
    num_classes, taps = len(flat), len(pixels.taps)
    step = max(1, CHUNK_VALUES // (num_classes * taps))
    largest = torch.cat([
        flat.index_select(1, part.flatten()).view(num_classes, *part.shape).amax(1) for part in pixels.taps.split(step, dim=1)
    ], dim=1)  # (C, P)
    count = (largest >= found).sum(0)
    order = count.argsort()
    for part in order.split(max(1, CHUNK_VALUES // (taps * int(count.max())))):
        candidates = largest[:, part].topk(int(count[part].max()), dim=0).indices.sort(0).values
        _score(flat, pixels[part], candidates, labels)


def logits_to_label_maps(
    logits: torch.Tensor, target_sizes: list, input_sizes: list | None = None, threshold: float = 0.5
) -> list:
    """(B, classes, h, w) logits -> one (H, W) int64 label map per image: the argmax of the logits resized
    bilinearly to the image's model-input size (when given) and then to its (H, W) in `target_sizes`,
    computed without resizing all the classes (see the module's docstring). One label: foreground where
    the sigmoid is above `threshold`."""
    if len(target_sizes) != len(logits):
        raise ValueError(
            f"Got {len(target_sizes)} target sizes for a batch of {len(logits)} logits: give one per image."
        )
    label_maps = []
    for index, image_logits in enumerate(logits):
        steps = ([tuple(input_sizes[index])] if input_sizes is not None else []) + [tuple(target_sizes[index])]
        rows = resize_map(image_logits.shape[-2], tuple(int(size[0]) for size in steps))
        cols = resize_map(image_logits.shape[-1], tuple(int(size[1]) for size in steps))
        label_maps.append(label_map(class_scores(image_logits, threshold), rows, cols))
    return label_maps
