"""Datasets and augmentation: the built-in set, local folders, transform invariants, bad-input errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from segformer import data

IGNORE = 255
# Well-separated colours: after bilinear resizing, a pixel's nearest colour still names its class.
COLORS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)
PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # normalize() leaves 0..255 values


def block_pair(height=40, width=60, seed=0):
    """A mask of 10x10 blocks of random classes and an image whose colour encodes the class."""
    rng = np.random.default_rng(seed)
    label = np.kron(rng.integers(0, 4, (height // 10, width // 10)), np.ones((10, 10), np.int64))
    return Image.fromarray(COLORS[label].astype(np.uint8)), label


def classes_from_pixels(pixels: torch.Tensor) -> np.ndarray:
    distances = ((pixels.permute(1, 2, 0).numpy()[:, :, None, :] - COLORS) ** 2).sum(-1)
    return distances.argmin(-1)


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_keeps_image_and_mask_aligned_and_pads_with_ignore(seed):
    image, label = block_pair(seed=seed)
    transform = data.TrainTransform(
        crop_size=(64, 80), scale=(60, 40), ratio_range=(0.5, 2.0), photometric=False, **PLAIN
    )
    sample = transform(image, label, np.random.default_rng(seed))
    pixels, labels = sample["pixel_values"], sample["labels"]
    assert pixels.shape == (3, 64, 80) and labels.shape == (64, 80) and labels.dtype == torch.long
    valid = labels.numpy() != IGNORE
    # Bilinear resizing blends colours only along block edges.
    agreement = (classes_from_pixels(pixels)[valid] == labels.numpy()[valid]).mean()
    assert agreement > 0.95
    # Padding: pixels 0, mask the ignore index, and only there.
    padded = ~valid
    assert (pixels[:, torch.from_numpy(padded)] == 0).all()
    assert set(np.unique(labels.numpy()[valid])) <= {0, 1, 2, 3}


def test_smaller_image_is_padded_never_with_a_real_class():
    image, label = block_pair(20, 20)
    transform = data.TrainTransform(crop_size=(50, 50), scale=(20, 20), ratio_range=(1.0, 1.0), photometric=False)
    sample = transform(image, label, np.random.default_rng(0))
    assert (sample["labels"][20:, :] == IGNORE).all() and (sample["labels"][:, 20:] == IGNORE).all()
    assert (sample["pixel_values"][:, 20:, :] == 0).all()
    np.testing.assert_array_equal(np.unique(sample["labels"][:20, :20]), np.unique(label))


def test_cat_max_ratio_prefers_crops_without_a_dominant_class():
    # Two halves; a 40x40 crop mixes them enough only when it straddles the middle.
    label = np.zeros((40, 100), np.int64)
    label[:, 50:] = 1
    image = Image.fromarray(COLORS[label].astype(np.uint8))

    def balanced_share(cat_max_ratio):
        shares = []
        for seed in range(40):
            _, crop = data.random_crop(image, label, (40, 40), cat_max_ratio, IGNORE, np.random.default_rng(seed))
            shares.append(np.bincount(crop.ravel(), minlength=2).max() / crop.size < 0.75)
        return np.mean(shares)

    assert balanced_share(1.0) < 0.5
    assert balanced_share(0.75) > 0.9


def test_ignored_pixels_do_not_count_for_cat_max_ratio():
    label = np.full((40, 40), IGNORE, np.int64)
    label[:, :4] = 0  # only one real class: every crop fails the test, so the last draw is kept
    image = Image.new("RGB", (40, 40))
    _, crop = data.random_crop(image, label, (20, 20), 0.75, IGNORE, np.random.default_rng(0))
    assert crop.shape == (20, 20)


def test_flip_moves_image_and_mask_together():
    image, label = block_pair(seed=3)
    transform = data.TrainTransform(
        crop_size=(40, 60), scale=(60, 40), ratio_range=(1.0, 1.0), flip_prob=1.0, photometric=False, **PLAIN
    )
    sample = transform(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(sample["labels"].numpy(), label[:, ::-1])
    np.testing.assert_array_equal(classes_from_pixels(sample["pixel_values"]), label[:, ::-1])


def test_photometric_distortion_changes_colours_only():
    image, _ = block_pair()
    changed = [np.asarray(data.photometric_distortion(image, np.random.default_rng(s))) for s in range(5)]
    assert all(c.shape == np.asarray(image).shape for c in changed)
    assert any(not np.array_equal(c, np.asarray(image)) for c in changed)


def make_dataset(pairs, **kwargs):
    split = data.image_pairs([image for image, _ in pairs], [label for _, label in pairs])
    return data.SegmentationDataset(split, data.EvalTransform(), **{"num_labels": 4, "split": "train", **kwargs})


def test_samples_are_deterministic_per_seed_epoch_and_index():
    splits = data.generate_builtin_dataset(num_train=4, num_validation=1, size=32)
    dataset = data.SegmentationDataset(
        splits["train"], data.TrainTransform(crop_size=(24, 24), scale=(32, 32)), num_labels=4
    )
    first = dataset[1]
    assert torch.equal(dataset[1]["pixel_values"], first["pixel_values"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1]["pixel_values"], first["pixel_values"])


def test_builtin_dataset_has_every_class_and_is_reproducible():
    first = data.generate_builtin_dataset(num_train=6, num_validation=2, size=48, seed=3)
    second = data.generate_builtin_dataset(num_train=6, num_validation=2, size=48, seed=3)
    masks = np.stack([np.asarray(row["label"]) for row in first["train"]])
    assert set(np.unique(masks)) == set(data.BUILTIN_ID2LABEL)
    assert np.array_equal(np.asarray(first["validation"][1]["image"]), np.asarray(second["validation"][1]["image"]))


def test_do_reduce_labels_is_applied_once():
    raw = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    dataset = make_dataset([(Image.new("RGB", (3, 2)), Image.fromarray(raw))], do_reduce_labels=True)
    np.testing.assert_array_equal(dataset[0]["labels"].numpy(), [[IGNORE, 0, 1], [2, 3, IGNORE]])


def mask(values):
    return Image.fromarray(np.asarray(values, np.uint8))


def test_class_id_out_of_range_names_the_sample():
    good = (Image.new("RGB", (2, 2)), mask([[0, 1], [2, 3]]))
    bad = (Image.new("RGB", (2, 2)), mask([[0, 9], [2, IGNORE]]))
    dataset = make_dataset([good, bad])
    dataset[0]
    with pytest.raises(ValueError, match=r"train\[1\].*class ids \[9\].*4 labels"):
        dataset[1]


def test_size_mismatch_names_the_sample():
    dataset = make_dataset([(Image.new("RGB", (3, 2)), mask([[0, 1], [2, 3]]))])
    with pytest.raises(ValueError, match=r"train\[0\].*3x2.*2x2"):
        dataset[0]


def test_colour_mask_is_rejected():
    dataset = make_dataset([(Image.new("RGB", (2, 2)), Image.new("RGB", (2, 2)))])
    with pytest.raises(ValueError, match=r"train\[0\].*single-channel"):
        dataset[0]


def test_empty_split_and_missing_column_are_errors():
    import datasets

    empty = datasets.Dataset.from_dict({"image": [], "label": []})
    with pytest.raises(ValueError, match="empty"):
        data.SegmentationDataset(empty, data.EvalTransform(), num_labels=2)
    with pytest.raises(ValueError, match=r"no column \['mask'\].*--label-column"):
        data.SegmentationDataset(empty, data.EvalTransform(), num_labels=2, label_column="mask")


def write_folder(root, names, size=(8, 6)):
    for split, stems in names.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for stem in stems:
            Image.new("RGB", size).save(root / split / "images" / f"{stem}.jpg")
            Image.new("L", size).save(root / split / "labels" / f"{stem}.png")


def test_local_folder_pairs_images_and_masks(tmp_path):
    write_folder(tmp_path, {"train": ["a", "b", "c"], "validation": ["d"]})
    train, evaluation = data.load_splits(str(tmp_path))
    assert len(train) == 3 and len(evaluation) == 1
    assert train[0]["image"].size == (8, 6) and train[0]["label"].mode == "L"


def test_unreadable_image_names_the_file(tmp_path):
    write_folder(tmp_path, {"train": ["a"]})
    (tmp_path / "train" / "images" / "a.jpg").write_text("not an image")
    train = data.open_dataset(str(tmp_path)).split("train")
    dataset = data.SegmentationDataset(train, data.EvalTransform(), num_labels=2)
    with pytest.raises(ValueError, match=r"train\[0\].*a\.jpg.*not a readable image"):
        dataset[0]


def test_unpaired_files_are_an_error(tmp_path):
    write_folder(tmp_path, {"train": ["a", "b"]})
    (tmp_path / "train" / "labels" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"do not pair: 1 images without a mask \(b\.jpg\)"):
        data.open_dataset(str(tmp_path))


def test_read_id2label_forms(tmp_path):
    path = tmp_path / "id2label.json"
    path.write_text('{"0": "road", "1": "car"}')
    assert data.read_id2label(str(path)) == {0: "road", 1: "car"}
    assert data.read_id2label('{"0": "road", "1": "car"}') == {0: "road", 1: "car"}
    assert data.read_id2label("road, car") == {0: "road", 1: "car"}


def test_pad_collate_keeps_true_sizes():
    samples = [
        {"pixel_values": torch.ones(3, 4, 5), "labels": torch.zeros(4, 5, dtype=torch.long)},
        {"pixel_values": torch.ones(3, 6, 2), "labels": torch.ones(6, 2, dtype=torch.long)},
    ]
    batch = data.pad_collate(samples)
    assert batch["pixel_values"].shape == (2, 3, 6, 5)
    assert batch["labels"][0, 4:].eq(IGNORE).all() and batch["pixel_values"][0, :, 4:].eq(0).all()
    assert batch["image_sizes"].tolist() == [[4, 5], [6, 2]]


def test_label_map_forms(tmp_path):
    path = tmp_path / "map.json"
    path.write_text('{"255": 1, "7": 0}')
    assert data.parse_label_map("255:1") == {255: 1}
    assert data.parse_label_map("0:255, 1:0, 2:1") == {0: 255, 1: 0, 2: 1}
    assert data.parse_label_map('{"255": 1}') == {255: 1}
    assert data.parse_label_map(str(path)) == {255: 1, 7: 0}
    assert data.parse_label_map({255: 1}) == {255: 1}  # as a YAML config file gives it
    assert data.parse_label_map(None) == {}


@pytest.mark.parametrize(
    "value, message",
    [("object:1", "not OLD:NEW"), ("255:1.5", "not OLD:NEW"), ("1:-1", "not OLD:NEW"), ("255", "not OLD:NEW"),
     ("1:2,1:3", "maps the mask value 1 twice"), ('{"a": 1}', "not OLD:NEW"), ("{255: 1}", "not a readable JSON")],
)  # fmt: skip
def test_bad_label_maps_name_the_option(value, message):
    with pytest.raises(ValueError, match=f"--label-map.*{message}"):
        data.parse_label_map(value)


def test_label_map_targets_must_be_class_ids_or_ignored():
    data.check_label_map({255: 1, 3: 255}, num_labels=2)
    with pytest.raises(ValueError, match=r"--label-map maps mask values to \[2\].*2 labels.*0\.\.1 or 255"):
        data.check_label_map({255: 2}, num_labels=2)
    # With reduce-labels the targets are in the stored numbering: 1..N are classes, 0 is ignored.
    data.check_label_map({255: 2, 7: 0}, num_labels=2, do_reduce_labels=True)
    with pytest.raises(ValueError, match=r"\[3\].*must be 0\.\.2 \(before --do-reduce-labels"):
        data.check_label_map({255: 3}, num_labels=2, do_reduce_labels=True)


def test_label_map_swaps_and_leaves_other_values_alone():
    stored = np.array([[0, 1, 2], [3, 255, 9]])
    mapped = data.apply_label_map(stored, {0: 1, 1: 0, 255: 2})
    np.testing.assert_array_equal(mapped, [[1, 0, 2], [3, 2, 9]])


def test_label_map_is_applied_before_reduce_labels_once():
    stored = np.array([[0, 1, 2], [3, 255, 4]], np.uint8)
    pair = [(Image.new("RGB", (3, 2)), Image.fromarray(stored))]
    # The map rewrites stored values (255 -> 3, in the 0 = "other" numbering), then reduce-labels shifts.
    dataset = make_dataset(pair, label_map={255: 3, 4: 0}, do_reduce_labels=True)
    expected = [[IGNORE, 0, 1], [2, 2, IGNORE]]
    np.testing.assert_array_equal(dataset[0]["labels"].numpy(), expected)
    np.testing.assert_array_equal(dataset.load_pair(0)[1], expected)
    _, stored_read, ids = dataset.load_sample(0)
    np.testing.assert_array_equal(stored_read, stored)
    np.testing.assert_array_equal(data.class_ids(stored, {255: 3, 4: 0}, True), ids)


def test_binary_masks_with_a_label_map_become_two_classes():
    pair = [(Image.new("RGB", (2, 2)), mask([[0, 255], [255, 0]]))]
    np.testing.assert_array_equal(make_dataset(pair, num_labels=2, label_map={255: 1})[0]["labels"], [[0, 1], [1, 0]])
    # Out of range after the map: the existing check names the sample and the map.
    with pytest.raises(ValueError, match=r"train\[0\].*class ids \[5\].*after --label-map"):
        make_dataset(pair, num_labels=2, label_map={255: 5})[0]
