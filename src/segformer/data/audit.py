"""The dataset audit: what the masks of a split hold, counted in the pass that reads every sample.

Per class the pixel count and the number of images containing it, the ignored pixels and the mask values
seen, both as stored in the files and as class ids (after `--label-map`, then `--do-reduce-labels`).
Every process counts its share of the samples; `reduce_audit` merges the shares exactly (integer counts
and value sets), so the report is the same with any number of processes. `check_audits` stops a run
whose masks cannot train what the user asked for (0/255 binary masks read with 255 as the ignore index,
a class with no training pixel) and returns the warnings; `class_weights` turns the training counts into
loss weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..configuration_segformer import IGNORE_INDEX
from ..errors import DataError

IGNORED_SHARE_WARNING = 0.5  # more than this share of a split's pixels ignored gives a warning


@dataclass
class SplitAudit:
    """The masks of one split, counted.

    `pixel_counts[c]` labelled pixels of class c; `image_counts[c]` images containing c; `image_pixels[c]`
    labelled pixels of those images (median-frequency balancing's denominator); `stored_values` the mask
    values as stored in the files, before `--label-map` and `--do-reduce-labels`; `values` after them,
    what the model trains on (class ids and the ignore index).
    """

    split: str
    num_labels: int
    ignore_index: int = IGNORE_INDEX
    num_images: int = 0
    total_pixels: int = 0
    ignored_pixels: int = 0
    pixel_counts: list = field(default_factory=list)
    image_counts: list = field(default_factory=list)
    image_pixels: list = field(default_factory=list)
    stored_values: list = field(default_factory=list)
    values: list = field(default_factory=list)

    def __post_init__(self):
        for name in ("pixel_counts", "image_counts", "image_pixels"):
            setattr(self, name, list(getattr(self, name)) or [0] * self.num_labels)

    def add(self, stored: np.ndarray, label: np.ndarray):
        """Counts one sample: its mask as stored and its checked class ids."""
        valid = label[label != self.ignore_index]
        counts = np.bincount(valid.ravel(), minlength=self.num_labels)
        present = counts > 0
        self.num_images += 1
        self.total_pixels += int(label.size)
        self.ignored_pixels += int(label.size - valid.size)
        self.pixel_counts = (np.array(self.pixel_counts, np.int64) + counts).tolist()
        self.image_counts = (np.array(self.image_counts, np.int64) + present).tolist()
        self.image_pixels = (np.array(self.image_pixels, np.int64) + present * valid.size).tolist()
        # The checked ids are the classes counted plus the ignore index: no second pass over the mask.
        values = np.flatnonzero(present).tolist() + ([self.ignore_index] if valid.size < label.size else [])
        self.stored_values = sorted(set(self.stored_values).union(_distinct(stored)))
        self.values = sorted(set(self.values).union(values))

    @property
    def ignored_share(self) -> float:
        return self.ignored_pixels / self.total_pixels if self.total_pixels else 0.0

    @property
    def absent(self) -> list:
        """Class ids with no pixel in this split."""
        return [c for c, count in enumerate(self.pixel_counts) if count == 0]

    def class_weights(self) -> list:
        """Median-frequency class weights of this split (see `class_weights`)."""
        return class_weights(self.pixel_counts, self.image_pixels)

    def to_dict(self) -> dict:
        return asdict(self)


def _distinct(values: np.ndarray) -> list:
    """The distinct values of a mask: a bincount (no sort) for the usual 8- and 16-bit masks."""
    if values.size and 0 <= values.min() and values.max() < 1 << 16:
        return np.flatnonzero(np.bincount(values.ravel())).tolist()
    return np.unique(values).tolist()


def merge_audits(audits: list) -> SplitAudit:
    """One audit of the union of the shards that `audits` counted (exact: sums and set unions)."""
    first = audits[0]
    merged = SplitAudit(first.split, first.num_labels, first.ignore_index)
    for audit in audits:
        merged.num_images += audit.num_images
        merged.total_pixels += audit.total_pixels
        merged.ignored_pixels += audit.ignored_pixels
        for name in ("pixel_counts", "image_counts", "image_pixels"):
            setattr(merged, name, [a + b for a, b in zip(getattr(merged, name), getattr(audit, name))])
        merged.stored_values = sorted(set(merged.stored_values).union(audit.stored_values))
        merged.values = sorted(set(merged.values).union(audit.values))
    return merged


def reduce_audit(audit: SplitAudit, accelerator) -> SplitAudit:
    """Every process's audit merged, on every process. Python integers and sets travel whole
    (`gather_object`), so the merge is exact whatever the counts or the number of mask values."""
    if accelerator.num_processes == 1:
        return audit
    from accelerate.utils import gather_object

    return merge_audits([SplitAudit(**shard) for shard in gather_object([audit.to_dict()])])


def class_weights(pixel_counts, image_pixels=None) -> list:
    """Median-frequency balancing (Eigen & Fergus 2015, used by SegNet): weight_c = median_f / f_c with
    f_c = pixels of class c / pixels of the images containing c (or of the whole split without
    `image_pixels`), the median over the classes present. The class of median frequency gets 1, so the
    loss keeps about its unweighted scale (no learning-rate retuning), and weights grow only linearly with
    rarity. A class with no pixel gets weight 0: it has no pixel to weight."""
    counts = np.asarray(pixel_counts, np.float64)
    totals = np.asarray(image_pixels, np.float64) if image_pixels is not None else np.full_like(counts, counts.sum())
    present = counts > 0
    if not present.any():
        raise DataError("No class has any labelled pixel: there is nothing to compute class weights from.")
    frequency = np.zeros_like(counts)
    frequency[present] = counts[present] / totals[present]
    weights = np.zeros_like(counts)
    weights[present] = np.median(frequency[present]) / frequency[present]
    return weights.tolist()


def looks_binary(audit: SplitAudit, label_map: dict) -> bool:
    """Masks whose only non-zero stored value is the ignore index (0/255 binary masks) and a label map
    that says nothing about that value: every object pixel would be ignored."""
    nonzero = set(audit.stored_values) - {0}
    return nonzero == {audit.ignore_index} and audit.ignore_index not in (label_map or {})


def names(ids, id2label: dict) -> str:
    return ", ".join(f"{id2label.get(c, c)!s}" for c in ids)


def check_audits(audits: dict, id2label: dict, *, label_map: dict = None, allow_missing_classes=False) -> list:
    """Raises a DataError, saying what to do, when the masks look like 0/255 binary masks or a class has
    no pixel in the training split (unless `allow_missing_classes`); returns the warnings (more than half
    the pixels ignored, classes absent from a split). `audits` maps "train" / "validation" to audits."""
    warnings = []
    ignore = next(iter(audits.values())).ignore_index
    for audit in audits.values():
        if looks_binary(audit, label_map) and not allow_missing_classes:
            raise DataError(
                f"The {audit.split} masks hold only the values {audit.stored_values}: they look like 0/255 binary "
                f"masks, but {ignore} is the ignore index, so every object pixel would be ignored and "
                f"{names(range(1, audit.num_labels), id2label) or 'no class but 0'} would never be seen. Map "
                f"the object value to its class id: --label-map {ignore}:1. (If {ignore} really marks pixels to "
                "ignore, --allow-missing-classes goes on.)"
            )
    train = audits.get("train")
    if train is not None and train.absent:
        message = (
            f"{'Class' if len(train.absent) == 1 else 'Classes'} {names(train.absent, id2label)} (id "
            f"{', '.join(map(str, train.absent))}) {'has' if len(train.absent) == 1 else 'have'} no pixel in the "
            f"training split {train.split!r} ({train.num_images} images; mask values after --label-map / "
            f"--do-reduce-labels: {train.values[:20]})"
        )
        if not allow_missing_classes:
            raise DataError(
                f"{message}: the model cannot learn {'it' if len(train.absent) == 1 else 'them'}. Check --id2label, "
                "--label-map and --do-reduce-labels, or give --allow-missing-classes to train anyway."
            )
        warnings.append(f"{message}; training anyway (--allow-missing-classes).")
    for audit in audits.values():
        if audit.ignored_share > IGNORED_SHARE_WARNING:
            warnings.append(
                f"{audit.ignored_share:.0%} of the {audit.split} split's mask pixels are the ignore index {ignore}: "
                "check --label-map / --do-reduce-labels (is the ignore value a class here?)."
            )
    validation = audits.get("validation")
    if validation is not None and validation.absent:
        warnings.append(
            f"The validation split {validation.split!r} has no pixel of {names(validation.absent, id2label)}: "
            "no IoU for it, and the mIoU is over the other classes."
        )
    return warnings


def format_table(audits: dict, id2label: dict) -> str:
    """The audit as a text table: per class and split the pixel count, its share and the images."""
    roles = list(audits)
    width = max([len("ignored (X)") + 3] + [len(str(name)) for name in id2label.values()])
    columns = [f" | {audits[r].split + ' pixels':>17} {'share':>7} {'images':>7}" for r in roles]
    header = f"{'class':<{width}}" + "".join(columns)
    lines = ["Dataset audit (class shares: of the labelled pixels)", header, "-" * len(header)]
    for c in range(next(iter(audits.values())).num_labels):
        row = f"{id2label.get(c, c)!s:<{width}}"
        for r in roles:
            audit = audits[r]
            labelled = audit.total_pixels - audit.ignored_pixels
            share = audit.pixel_counts[c] / labelled if labelled else 0.0
            row += f" | {audit.pixel_counts[c]:>17,} {share:>7.2%} {audit.image_counts[c]:>7}"
        lines.append(row + ("   <- no pixel" if any(audits[r].pixel_counts[c] == 0 for r in roles) else ""))
    ignore = next(iter(audits.values())).ignore_index
    row = f"{f'ignored ({ignore})':<{width}}"
    for r in roles:
        row += f" | {audits[r].ignored_pixels:>17,} {audits[r].ignored_share:>7.2%} {audits[r].num_images:>7}"
    lines.append(row + "   (share of all pixels; images: all)")
    for r in roles:
        lines.append(
            f"{audits[r].split} mask values: {_values(audits[r].stored_values)} as stored, "
            f"{_values(audits[r].values)} after --label-map / --do-reduce-labels"
        )
    return "\n".join(lines)


def _values(values: list) -> str:
    return str(values) if len(values) <= 12 else f"[{', '.join(map(str, values[:12]))}, ... ({len(values)} values)]"


def dataset_report(audits: dict, id2label: dict, *, label_map: dict = None, do_reduce_labels: bool = False) -> dict:
    """What `dataset_report.json` holds: the audits, how masks became class ids, and the class weights
    that `--class-weights auto` takes from the training split."""
    report = {
        "classes": [str(id2label.get(c, c)) for c in range(next(iter(audits.values())).num_labels)],
        "label_map": {str(k): v for k, v in (label_map or {}).items()},
        "do_reduce_labels": do_reduce_labels,
        "order": "stored values -> label_map -> do_reduce_labels -> class ids",
        "splits": {role: audit.to_dict() for role, audit in audits.items()},
    }
    train = audits.get("train")
    if train is not None and any(train.pixel_counts):
        report["class_weights_median_frequency"] = train.class_weights()
    return report
