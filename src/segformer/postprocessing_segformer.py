"""Label maps from SegFormer's logits without resizing every class to full resolution, equal to resizing the
logits and then taking the argmax.

The definition (the original code's, and what training evaluates): the logits (C, h, w) are resized
bilinearly to the model-input size, then to the image size, and each pixel takes the class with the
largest value. Done as written it costs as much as the model itself: C maps at full resolution, twice.

Every bilinear resize (align_corners=False, no antialiasing) is linear and separable, with non-negative
weights that sum to one for each output; so is a chain of them. The definition is one map
`value_c = A @ scores_c @ B.T`, each output pixel reading a few logit pixels (its sources). Hence
(docs/postprocessing.md has the argument and the measurements):

1. Where all the sources of a pixel have the same best class, that class wins there: a convex combination
   of points where it is largest keeps it largest. One argmax at the logits' resolution settles every
   pixel away from class boundaries.
2. On boundaries, only the sources' own best classes are scored (exactly, from the composed weights); that
   is the label where it beats the second-best scores resized likewise, a bound on every other class.
3. Where the bound fails, every class that can still win is scored; logits with boundaries everywhere
   (random ones) score every class, a few at a time.

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

# Ambiguous anchors are scored in chunks of at most this many values, so memory stays bounded even
# for logits where every pixel is ambiguous (random ones).
CHUNK_VALUES = 1 << 22


class AxisMap(NamedTuple):
    """A 1-D linear map onto L outputs: the sources each output reads, (L, k) indices in ascending order
    (padded by repeating the first), and their (L, k) float64 weights (zero on the padding)."""

    index: torch.Tensor
    weight: torch.Tensor


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
    index = torch.where(used, index, index[:, :1])  # padding repeats a source read, so bounds stay tight
    return AxisMap(index, torch.where(used, weights.gather(1, index), 0.0))


@lru_cache(maxsize=64)
def resize_map(size: int, lengths: tuple) -> AxisMap:
    """The `AxisMap` of an axis of `size` resized through `lengths` (cached: a folder's images share sizes)."""
    return axis_map(chain_weights(size, lengths))


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
    """(C, n, m) -> (n, m) index of the largest score (the first of equal ones)."""
    if scores.device.type != "cpu":
        return scores.argmax(0)
    # torch's CPU argmax over a leading dimension is a scalar loop; a running maximum over the classes
    # runs vectorized and takes about half the time.
    top, index = scores[0].clone(), torch.zeros(scores.shape[1:], dtype=torch.long)
    above = torch.empty(scores.shape[1:], dtype=torch.bool)
    for c in range(1, len(scores)):
        torch.gt(scores[c], top, out=above)
        index.masked_fill_(above, c)
        torch.maximum(top, scores[c], out=top)
    return index


class _Patterns(NamedTuple):
    """The outputs of an axis grouped by the sources they read: consecutive outputs that read the same
    sources share a pattern. Laid out with the pattern last, so that work on many anchors vectorizes."""

    sources: torch.Tensor  # (k, P) the sources each pattern reads
    of: torch.Tensor  # (L,) the pattern of each output
    positions: torch.Tensor  # (longest, P) the outputs of each pattern, padded by repeating its last
    weight: torch.Tensor  # (longest, k, P) their weights


def _patterns(axis: AxisMap, device) -> _Patterns:
    index, weight = axis.index.to(device), axis.weight.to(device)
    sources, of, length = torch.unique_consecutive(index, dim=0, return_inverse=True, return_counts=True)
    start = length.cumsum(0) - length
    positions = start[:, None] + torch.minimum(torch.arange(int(length.max()), device=device), length[:, None] - 1)
    weight = weight[positions].permute(1, 2, 0).float()  # float32: the reference's own rounding is of the same order
    return _Patterns(sources.T.contiguous(), of, positions.T.contiguous(), weight.contiguous())


def label_map(scores: torch.Tensor, rows: AxisMap, cols: AxisMap) -> torch.Tensor:
    """The argmax over classes of `A @ scores[c] @ B.T`, with A (H, n) given by `rows` and B (W, m) by
    `cols`: (C, n, m) scores -> (H, W) int64 labels."""
    rows, cols = _patterns(rows, scores.device), _patterns(cols, scores.device)
    best = top_class(scores)  # (n, m)
    # An anchor is a (row pattern, column pattern) pair: a rectangle of outputs reading the same sources.
    (kr, num_rows), (kc, num_cols) = rows.sources.shape, cols.sources.shape
    support = best.index_select(0, rows.sources.flatten()).index_select(1, cols.sources.flatten())
    support = support.view(kr, num_rows, kc, num_cols)
    first = support[0, :, 0]
    agree = (support == first[None, :, None]).all(2).all(0)  # (Pr, Pc)
    labels = first.index_select(0, rows.of).index_select(1, cols.of)  # (H, W): right wherever the support agrees
    anchor_rows, anchor_cols = (~agree).nonzero(as_tuple=True)
    if 2 * len(anchor_rows) > agree.numel():
        # Near-random logits, boundaries everywhere: scoring every class on every pixel is cheaper.
        return _dense_label_map(scores, rows, cols)
    if len(anchor_rows):
        _settle(scores, best, rows, cols, anchor_rows, anchor_cols, labels)
    return labels


class _Anchors(NamedTuple):
    """Anchors to settle, each a column: the flat source positions they read, their weights and outputs."""

    taps: torch.Tensor  # (kr, kc, A) flat positions in the (n, m) scores
    row_weight: torch.Tensor  # (Rl, kr, A)
    col_weight: torch.Tensor  # (Cl, kc, A)
    outputs: torch.Tensor  # (Rl, Cl, A) flat positions in the (H, W) labels

    def __getitem__(self, part):
        return _Anchors(*(tensor.index_select(-1, part) for tensor in self))  # far faster than [..., part]


def _settle(scores, best, rows: _Patterns, cols: _Patterns, anchor_rows, anchor_cols, labels):
    """The exact labels of the anchors whose sources disagree. Only the classes that are best on some
    source compete first; the result is exact where the winner beats the second-best scores resized
    likewise, which bound every other class there. Anchors where that bound fails score every class
    that can still win."""
    num_classes, n, m = scores.shape
    row = _Patterns(*(t.index_select(-1, anchor_rows) if t.dim() > 1 else t for t in rows))  # each anchor's own
    col = _Patterns(*(t.index_select(-1, anchor_cols) if t.dim() > 1 else t for t in cols))
    taps = row.sources[:, None] * m + col.sources[None]  # (kr, kc, A)
    outputs = row.positions[:, None] * labels.shape[1] + col.positions[None]  # (Rl, Cl, A)
    anchors = _Anchors(taps, row.weight, col.weight, outputs)
    # Second-best score on every source read: the scores there without the best class.
    read = torch.zeros(n * m, dtype=torch.bool, device=scores.device)
    read[taps.flatten()] = True
    positions = read.nonzero()[:, 0]
    where = torch.empty(n * m, dtype=torch.long, device=scores.device)
    where[positions] = torch.arange(len(positions), device=scores.device)
    where = where[taps]  # a lookup table: torch.unique would sort every tap
    block = scores.view(num_classes, -1).index_select(1, positions)
    block[best.view(-1)[positions], torch.arange(len(positions), device=block.device)] = -torch.inf
    second = block.amax(0)[where]  # (kr, kc, A)
    # The classes that are best on some source: on a boundary of two classes (most anchors) the smallest
    # and the largest, at a junction of three also the one between; more keep all, repeats included.
    classes = best.view(-1)[taps.flatten(0, 1)]  # (kr * kc, A)
    low, high = classes.amin(0), classes.amax(0)
    middle = torch.where(classes < high, classes, low).amax(0)
    two = ((classes == low) | (classes == high)).all(0)
    three = ~two & ((classes == low) | (classes == middle) | (classes == high)).all(0)
    groups = ((two, torch.stack([low, high])), (three, torch.stack([low, middle, high])), (~two & ~three, classes))
    unsettled = []
    for group, candidates in groups:
        group = group.nonzero()[:, 0]
        for part in group.split(_chunk(anchors, len(candidates))):
            top = _score(scores, anchors[part], candidates[:, part], labels)
            bound = _resize(anchors[part], second[None, ..., part])[0]
            unsettled.append(part[(top <= bound).flatten(0, 1).any(0)])
    unsettled = torch.cat(unsettled)
    if not len(unsettled):
        return
    if len(unsettled) * anchors.outputs[..., 0].numel() > labels.numel() // 2:
        labels.copy_(_dense_label_map(scores, rows, cols))
        return
    for part in unsettled.split(_chunk(anchors, num_classes)):
        # Every class whose largest score on the sources reaches the best smallest score of any class.
        taps = anchors.taps.index_select(-1, part).flatten(0, 1)
        window = (
            scores.view(num_classes, -1).index_select(1, taps.flatten()).view(num_classes, *taps.shape)
        )  # (C, kr * kc, A)
        plausible = window.amax(1) >= window.amin(1).amax(0)  # (C, A)
        count = int(plausible.sum(0).max())
        order = (~plausible).to(torch.uint8).sort(dim=0, stable=True).indices[:count]  # plausible first, ascending
        candidates = torch.where(plausible.gather(0, order), order, order[:1])  # padding repeats a plausible one
        _score(scores, anchors[part], candidates, labels)


def _chunk(anchors: "_Anchors", classes: int) -> int:
    """Anchors per chunk when scoring `classes` candidates on each."""
    per_anchor = classes * anchors.outputs[..., 0].numel() * max(anchors.taps.shape[0], 2)
    return max(1, CHUNK_VALUES // per_anchor)


def _dense_label_map(scores, rows: _Patterns, cols: _Patterns) -> torch.Tensor:
    """The argmax of every class resized, a few classes at a time (a running maximum bounds memory)."""
    top = labels = None
    step = max(1, CHUNK_VALUES // (len(rows.of) * len(cols.of)))
    for start in range(0, len(scores), step):
        chunk = scores[start : start + step]
        across = sum(
            chunk[:, :, index] * weight for index, weight in zip(cols.sources[:, cols.of], _output_weights(cols))
        )
        values = sum(
            across[:, index] * weight[:, None] for index, weight in zip(rows.sources[:, rows.of], _output_weights(rows))
        )
        value, label = values.max(0)  # the first of equal values, as argmax
        if top is None:
            top, labels = value, label
        else:
            better = value > top
            top, labels = torch.where(better, value, top), torch.where(better, label + start, labels)
    return labels


def _output_weights(axis: _Patterns) -> torch.Tensor:
    """(k, L): the weight of each of its pattern's sources in each output."""
    rank = torch.arange(len(axis.of), device=axis.of.device) - axis.positions[0][axis.of]
    return axis.weight[rank.clamp(max=axis.positions.shape[0] - 1), :, axis.of].T


def _resize(anchors: _Anchors, window: torch.Tensor) -> torch.Tensor:
    """(K, kr, kc, A) scores on the anchors' sources -> (K, Rl, Cl, A) values at their outputs.
    Broadcast products with the anchors last: batched products of tiny matrices are far slower."""
    across = (window[:, :, None] * anchors.col_weight[None, None]).sum(3)  # (K, kr, Cl, A)
    return (anchors.row_weight[None, :, :, None] * across[:, None]).sum(2)


def _score(scores, anchors: _Anchors, classes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Writes into `labels` the best of the (K, A) `classes` at each anchor's outputs; returns its
    (Rl, Cl, A) values."""
    _, n, m = scores.shape
    window = scores.view(-1)[classes[:, None, None] * (n * m) + anchors.taps[None]]  # (K, kr, kc, A)
    values = _resize(anchors, window)  # (K, Rl, Cl, A)
    top, winner = values[0], classes[0].expand_as(values[0])
    for value, candidate in zip(values[1:], classes[1:]):
        # Of equal values the lowest class wins, as argmax picks the first.
        better = (value > top) | ((value == top) & (candidate < winner))
        top, winner = torch.where(better, value, top), torch.where(better, candidate, winner)
    labels.view(-1)[anchors.outputs.flatten()] = winner.flatten()  # padding rewrites an output with its own label
    return top


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
