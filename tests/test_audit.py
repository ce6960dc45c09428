"""The dataset audit: counts against a direct numpy count, exact merging of shards, the checks that stop a
run (0/255 binary masks, a class missing from training) and its warnings, class weights, the report."""

import json

import numpy as np
import pytest
from PIL import Image

from segformer import data
from segformer.data.audit import _distinct, looks_binary
from segformer.errors import DataError
from segformer.train.datasets import check_samples
from segformer.train.reporting import plot_class_shares

IGNORE = 255
NAMES = {0: "background", 1: "object", 2: "edge"}


class OneProcess:
    """What `check_samples` reads of an Accelerator, for one process or one shard of several."""

    def __init__(self, index=0, count=1):
        self.process_index, self.num_processes, self.is_local_main_process = index, count, False


def masks_dataset(masks, num_labels=3, **kwargs):
    images = [Image.new("RGB", (m.shape[1], m.shape[0])) for m in masks]
    split = data.image_pairs(images, [Image.fromarray(np.asarray(m, np.uint8)) for m in masks])
    return data.SegmentationDataset(split, data.EvalTransform(), num_labels=num_labels, **kwargs)


def random_masks(count=5, seed=0):
    """Masks of stored values 0..3 and 255, of different sizes; ADE-style when reduced (0 = other)."""
    rng = np.random.default_rng(seed)
    masks = []
    for index in range(count):
        mask = rng.integers(0, 4, (7 + index, 9))
        mask[rng.uniform(size=mask.shape) < 0.2] = IGNORE
        masks.append(mask)
    masks[2][masks[2] == 3] = 1  # one image without the stored value 3
    return masks


def numpy_audit(masks, to_ids, num_labels):
    """The audit's numbers counted directly, mask by mask."""
    ids = [to_ids(np.asarray(m, np.int64)) for m in masks]
    pixels = [int(sum((i == c).sum() for i in ids)) for c in range(num_labels)]
    images = [int(sum((i == c).any() for i in ids)) for c in range(num_labels)]
    image_pixels = [int(sum((i != IGNORE).sum() for i in ids if (i == c).any())) for c in range(num_labels)]
    ignored = int(sum((i == IGNORE).sum() for i in ids))
    stored = sorted(set(np.concatenate([np.ravel(m) for m in masks]).tolist()))
    values = sorted(set(np.concatenate([i.ravel() for i in ids]).tolist()))
    return pixels, images, image_pixels, ignored, stored, values


@pytest.mark.parametrize(
    "label_map, reduce, to_ids",
    [
        ({}, False, lambda m: m),
        ({3: 2}, False, lambda m: np.where(m == 3, 2, m)),
        ({3: 0}, True, lambda m: np.select([m == 3, m == 0, m == IGNORE], [IGNORE, IGNORE, IGNORE], m - 1)),
    ],
    ids=["no-map", "map", "map-then-reduce"],
)
def test_audit_counts_equal_a_direct_count(label_map, reduce, to_ids):
    masks = random_masks()
    if not label_map:  # 3 would be out of range: values 0..2 and 255 only
        masks = [np.where(m == 3, 2, m) for m in masks]
    dataset = masks_dataset(masks, label_map=label_map, do_reduce_labels=reduce)
    audit = check_samples(dataset, OneProcess())
    num_labels = 3
    pixels, images, image_pixels, ignored, stored, values = numpy_audit(masks, to_ids, num_labels)
    assert audit.pixel_counts == pixels and audit.image_counts == images and audit.image_pixels == image_pixels
    assert audit.ignored_pixels == ignored and audit.total_pixels == sum(m.size for m in masks)
    assert audit.stored_values == stored and audit.values == values and audit.num_images == len(masks)
    assert audit.ignored_share == pytest.approx(ignored / sum(m.size for m in masks))


def test_audit_of_the_builtin_dataset_equals_a_direct_count():
    splits = data.generate_builtin_dataset(num_train=6, num_validation=1, size=32)
    audit = check_samples(data.SegmentationDataset(splits["train"], data.EvalTransform(), num_labels=4), OneProcess())
    masks = np.stack([np.asarray(row["label"], np.int64) for row in splits["train"]])
    assert audit.pixel_counts == np.bincount(masks.ravel(), minlength=4).tolist()
    assert audit.image_counts == [int((masks == c).any(axis=(1, 2)).sum()) for c in range(4)]
    assert audit.ignored_pixels == 0 and audit.stored_values == audit.values == [0, 1, 2, 3]


@pytest.mark.parametrize("processes", [2, 3])
def test_shards_merge_exactly_into_the_whole(processes):
    masks = [np.where(m == 3, 2, m) for m in random_masks(count=7, seed=1)]
    masks[4][:] = 0  # one shard may miss values the others have
    dataset = masks_dataset(masks)
    whole = check_samples(dataset, OneProcess())
    shards = [check_samples(dataset, OneProcess(index, processes)) for index in range(processes)]
    assert data.merge_audits(shards) == whole
    assert data.merge_audits([data.SplitAudit(**shard.to_dict()) for shard in shards]).to_dict() == whole.to_dict()


def test_class_weights_are_median_frequency_balancing():
    # Class 0 in 3 images of 100 labelled pixels, class 1 in 1 image, class 2 in 2 images, class 3 nowhere.
    pixel_counts = [240, 10, 50, 0]
    image_pixels = [300, 100, 200, 0]
    frequencies = [240 / 300, 10 / 100, 50 / 200]  # 0.8, 0.1, 0.25: median 0.25
    expected = [np.median(frequencies) / f for f in frequencies] + [0.0]
    assert expected == pytest.approx([0.25 / 0.8, 0.25 / 0.1, 1.0, 0.0])
    assert data.class_weights(pixel_counts, image_pixels) == pytest.approx(expected)
    assert data.class_weights(pixel_counts, image_pixels)[2] == 1.0  # the median class keeps weight 1
    # Without image totals: frequency over the whole split, i.e. median count / count.
    assert data.class_weights([240, 10, 50, 0]) == pytest.approx([50 / 240, 50 / 10, 1.0, 0.0])
    with pytest.raises(DataError, match="No class has any labelled pixel"):
        data.class_weights([0, 0])


def audit_of(split="train", num_labels=2, pixels=(10, 10), ignored=0, stored=(0, 1)):
    audit = data.SplitAudit(split, num_labels, pixel_counts=list(pixels), image_counts=[int(p > 0) for p in pixels],
                            image_pixels=[sum(pixels) if p else 0 for p in pixels])  # fmt: skip
    audit.num_images, audit.ignored_pixels = 1, ignored
    audit.total_pixels = sum(pixels) + ignored
    audit.stored_values = audit.values = sorted(stored)
    return audit


@pytest.mark.parametrize("stored, num_labels", [((0, 255), 2), ((255,), 2), ((0, 255), 3)])
def test_binary_masks_stop_the_run_suggesting_a_label_map(stored, num_labels):
    audit = audit_of(num_labels=num_labels, pixels=(20,) + (0,) * (num_labels - 1), ignored=20, stored=stored)
    with pytest.raises(DataError, match=r"look like 0/255 binary masks.*--label-map 255:1"):
        data.check_audits({"train": audit, "validation": audit}, NAMES)
    # A map that says what 255 is settles it; 255:255 too (the user says: ignore).
    assert looks_binary(audit, {}) and not looks_binary(audit, {255: 255})


def test_binary_masks_are_found_in_the_validation_split_of_an_evaluation():
    with pytest.raises(DataError, match=r"validation masks hold only the values \[0, 255\]"):
        data.check_audits({"validation": audit_of("validation", pixels=(20, 0), ignored=5, stored=(0, 255))}, NAMES)


def test_class_missing_from_training_stops_the_run_unless_allowed():
    train = audit_of(num_labels=3, pixels=(10, 5, 0))
    validation = audit_of("validation", num_labels=3, pixels=(10, 5, 1))
    with pytest.raises(DataError, match=r"Class edge \(id 2\) has no pixel in the training.*--allow-missing-classes"):
        data.check_audits({"train": train, "validation": validation}, NAMES)
    warnings = data.check_audits({"train": train, "validation": validation}, NAMES, allow_missing_classes=True)
    assert len(warnings) == 1 and "edge" in warnings[0] and "training anyway" in warnings[0]


def test_mostly_ignored_masks_and_classes_absent_from_validation_warn():
    train = audit_of(pixels=(10, 9), ignored=19)  # 19 of 38 pixels: not more than half
    validation = audit_of("validation", pixels=(10, 0), ignored=11)  # 11 of 21: more than half
    warnings = data.check_audits({"train": train, "validation": validation}, NAMES)
    assert len(warnings) == 2
    assert warnings[0].startswith("52% of the validation split's mask pixels are the ignore index 255")
    assert "has no pixel of object" in warnings[1] and "mIoU is over the other classes" in warnings[1]


def test_report_table_and_chart(tmp_path):
    train = audit_of(num_labels=3, pixels=(100000, 30, 0), ignored=5, stored=(0, 1, 7))
    validation = audit_of("validation", num_labels=3, pixels=(500, 0, 4))
    audits = {"train": train, "validation": validation}
    table = data.format_table(audits, NAMES)
    lines = table.splitlines()
    assert "train pixels" in lines[1] and "validation pixels" in lines[1]
    assert lines[3].split()[:4] == ["background", "|", "100,000", "99.97%"]
    assert "no pixel" in lines[4] and "no pixel" in lines[5]
    assert "train mask values: [0, 1, 7] as stored" in table
    report = data.dataset_report(audits, NAMES, label_map={7: 1}, do_reduce_labels=False)
    assert json.loads(json.dumps(report))["splits"]["train"]["pixel_counts"] == [100000, 30, 0]
    assert report["label_map"] == {"7": 1} and report["classes"] == ["background", "object", "edge"]
    plot_class_shares(audits, NAMES, tmp_path / "report.png")
    with Image.open(tmp_path / "report.png") as picture:
        assert picture.size[0] > 500 and picture.size[1] > 150


@pytest.mark.parametrize("values", [[0, 3, 3, 255], [0, 65535, 7], [-1, 70000, 5, 5], []])
def test_distinct_mask_values(values):
    assert _distinct(np.array(values, np.int64)) == sorted(set(values))
