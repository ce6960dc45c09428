"""The paper's datasets in their official layouts (ADE20K, Cityscapes, Pascal VOC 2012), built as tiny trees
with the official file names and mask values, and the forms of `datasets` (save_to_disk, Parquet snapshots,
Hub ids): detection, pairing, splits, columns, class names, label handling and the errors of bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from segformer import data
from segformer.cli import main
from segformer.data.layouts import cityscapes

SIZE = (12, 8)  # width, height: tiny images


def image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)).save(path)


def mask(path, values, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.resize(np.asarray(values, np.uint8), SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0])
    picture = Image.fromarray(array)
    if palette is not None:
        picture = picture.convert("P")
        picture.putpalette(palette)
    picture.save(path)


def ade_tree(root, train=("00000001", "00000002"), val=("00000001",)):
    for folder, kind, stems in (("training", "train", train), ("validation", "val", val)):
        for i, stem in enumerate(stems):
            image(root / "images" / folder / f"ADE_{kind}_{stem}.jpg", i)
            mask(root / "annotations" / folder / f"ADE_{kind}_{stem}.png", [0, 1, 150, 7])
    return root


def cityscapes_tree(root, suffixes=("labelTrainIds", "labelIds")):
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("frankfurt",))):
        for city in cities:
            stem = f"{city}_000000_000019"
            image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            gt = root / "gtFine" / split / city
            if "labelIds" in suffixes:
                mask(gt / f"{stem}_gtFine_labelIds.png", [0, 7, 26, 33, 4])  # unlabeled, road, car, bicycle, static
            if "labelTrainIds" in suffixes:
                mask(gt / f"{stem}_gtFine_labelTrainIds.png", [255, 0, 13, 18, 255])
            if not suffixes:  # the colour pictures only
                image(gt / f"{stem}_gtFine_color.png")
    return root


def voc_tree(root, names=("2007_000032", "2007_000039")):
    voc = root / "VOCdevkit" / "VOC2012"
    palette = [c for color in data.layouts.voc.PALETTE for c in color] + [224, 224, 192] * (256 - 21)
    for i, name in enumerate(names):
        image(voc / "JPEGImages" / f"{name}.jpg", i)
        mask(voc / "SegmentationClass" / f"{name}.png", [0, 1, 15, 255], palette)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text(f"{names[0]}\n")
    (lists / "val.txt").write_text(f"{names[1]}\n")
    return root


def masks_of(split, dataset_obj):
    reader = data.SegmentationDataset(split, data.EvalTransform(), num_labels=len(dataset_obj.id2label),
                                      label_map=dataset_obj.label_map, do_reduce_labels=dataset_obj.do_reduce_labels)
    return [reader.load_pair(i)[1] for i in range(len(reader))]


def test_ade20k_tree_pairs_files_names_150_classes_and_reduces_labels(tmp_path):
    found = data.open_dataset(str(ade_tree(tmp_path / "ADEChallengeData2016")))
    assert found.form == "ade20k" and set(found.splits) == {"train", "validation"}
    assert len(found.split("train")) == 2 and len(found.split("val")) == 1
    assert len(found.id2label) == 150 and found.id2label[0] == "wall" and found.id2label[149] == "flag"
    assert len(found.palette) == 150 and found.palette[0] == [120, 120, 120]
    # 0 ("other") is ignored, 1..150 become 0..149
    assert set(np.unique(masks_of(found.split("train"), found)[0])) == {255, 0, 149, 6}
    # the parent folder is found too, and the protocol preset comes with the layout
    assert data.open_dataset(str(tmp_path)).form == "ade20k"
    assert data.layouts.preset(str(tmp_path))["eval_short_side"] == 512


def test_cityscapes_train_ids_or_label_ids_through_the_official_table(tmp_path):
    both = data.open_dataset(str(cityscapes_tree(tmp_path / "a")))
    assert both.form == "cityscapes" and both.label_map == {} and len(both.id2label) == 19
    assert len(both.split("train")) == 2 and len(both.split("validation")) == 1
    ids_only = data.open_dataset(str(cityscapes_tree(tmp_path / "b", suffixes=("labelIds",))))
    assert ids_only.label_map == cityscapes.LABEL_IDS_MAP and "labelIds" in " ".join(ids_only.notes)
    # The same train ids either way: road 0, car 13, bicycle 18, the rest ignored.
    for found in (both, ids_only):
        assert set(np.unique(masks_of(found.split("validation"), found)[0])) == {0, 13, 18, 255}


def test_voc_split_lists_and_palette_masks(tmp_path):
    found = data.open_dataset(str(voc_tree(tmp_path)))
    assert found.form == "voc" and len(found.split("train")) == 1 and len(found.split("validation")) == 1
    assert found.id2label[15] == "person" and found.palette[1] == [128, 0, 0]
    assert set(np.unique(masks_of(found.split("train"), found)[0])) == {0, 1, 15, 255}


def test_dataset_format_names_the_layout(tmp_path):
    ade_tree(tmp_path / "ade")
    assert data.open_dataset(str(tmp_path / "ade"), dataset_format="ade20k").form == "ade20k"
    with pytest.raises(ValueError, match="no cityscapes tree.*leftImg8bit"):
        data.open_dataset(str(tmp_path / "ade"), dataset_format="cityscapes")


def pairs_dataset(names=("image", "label"), count=3, classes=None):
    import datasets

    images = [Image.fromarray(np.full((SIZE[1], SIZE[0], 3), i * 40, np.uint8)) for i in range(count)]
    masks = [Image.fromarray(np.full((SIZE[1], SIZE[0]), i % 2, np.uint8)) for i in range(count)]
    features = {names[0]: datasets.Image(), names[1]: datasets.Image()}
    columns = {names[0]: images, names[1]: masks}
    if classes:
        features["scene"] = datasets.ClassLabel(names=classes)
        columns["scene"] = [0] * count
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def test_save_to_disk_folder_with_hub_style_columns_and_split_aliases(tmp_path, capsys):
    import datasets

    splits = datasets.DatasetDict({"training": pairs_dataset(("pixel_values", "label")),
                                   "val": pairs_dataset(("pixel_values", "label"), 2)})  # fmt: skip
    splits.save_to_disk(str(tmp_path / "saved"))
    found = data.open_dataset(str(tmp_path / "saved"))
    assert found.form == "save_to_disk" and (found.image_column, found.label_column) == ("pixel_values", "label")
    train, evaluation = data.train_and_eval(found, "train", "validation", 0.1, 0)
    assert len(train) == 3 and len(evaluation) == 2
    assert "images 'pixel_values', masks 'label'" in " ".join(found.notes)


def test_parquet_snapshot_with_and_without_readme_configs(tmp_path):
    for name, split in (("train", pairs_dataset(count=3)), ("validation", pairs_dataset(count=2))):
        (tmp_path / "plain" / "data").mkdir(parents=True, exist_ok=True)
        split.to_parquet(str(tmp_path / "plain" / "data" / f"{name}-00000-of-00001.parquet"))
    (tmp_path / "plain" / "id2label.json").write_text(json.dumps({"0": "ground", "1": "thing"}))
    plain = data.open_dataset(str(tmp_path / "plain"))
    assert plain.form == "files" and len(plain.split("train")) == 3 and len(plain.split("val")) == 2
    assert plain.id2label == {0: "ground", 1: "thing"}
    # A README's configs name the files (here under other names) and the splits.
    (tmp_path / "plain" / "data").rename(tmp_path / "plain" / "shards")
    for old, new in (("train", "a"), ("validation", "b")):
        (tmp_path / "plain" / "shards" / f"{old}-00000-of-00001.parquet").rename(tmp_path / "plain" / "shards" / f"{new}.parquet")
    (tmp_path / "plain" / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: shards/a.parquet\n"
        "  - split: validation\n    path: shards/b.parquet\n---\n"
    )
    configured = data.open_dataset(str(tmp_path / "plain"))
    assert len(configured.split("train")) == 3 and len(configured.split("validation")) == 2


def test_columns_found_by_type_and_name_or_an_error_naming_the_candidates():
    import datasets

    image = datasets.Image()
    assert data.find_columns({"img": image, "gt": image})[:2] == ("img", "gt")
    assert data.find_columns({"photo": image, "semantic_segmentation": image})[:2] == ("photo", "semantic_segmentation")
    assert data.find_columns({"a": image, "b": image}, image_column="b")[:2] == ("b", "a")
    with pytest.raises(ValueError, match=r"Several columns could hold the masks: \['label', 'mask'\]"):
        data.find_columns({"image": image, "label": image, "mask": image})
    with pytest.raises(ValueError, match=r"no image column.*caption.*--image-column"):
        data.find_columns({"caption": datasets.Value("int32")})
    with pytest.raises(ValueError, match=r"--label-column 'seg'.*no such column"):
        data.find_columns({"image": image, "label": image}, label_column="seg")


def test_a_scene_classlabel_is_no_mask_class_list(tmp_path):
    split = pairs_dataset(("image", "annotation"), classes=["bathroom", "street"])
    split.save_to_disk(str(tmp_path / "scenes"))
    found = data.open_dataset(str(tmp_path / "scenes"))
    assert found.label_column == "annotation" and found.id2label is None


def tabular(root):
    import datasets

    root.mkdir()
    datasets.Dataset.from_dict({"text": ["a", "b"], "score": [1, 2]}).to_parquet(str(root / "train.parquet"))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda root: ade_tree(root, val=("00000001", "00000002")) and
         (root / "images" / "validation" / "ADE_val_00000002.jpg").unlink(), "masks without an image (ADE_val_00000002.png)"),
        (lambda root: cityscapes_tree(root, suffixes=()), "neither a *_gtFine_labelTrainIds.png nor"),
        (lambda root: voc_tree(root) and (root / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png").unlink(),
         "train.txt names 1 files that do not exist"),
        (tabular, "The dataset has no image column"),
        (lambda root: root.mkdir(), "holds no dataset in a layout this package reads. Tried:"),
    ],
    ids=["ade20k", "cityscapes", "voc", "parquet", "no-layout"],
)
def test_bad_input_stops_train_with_one_error_line_before_training(tmp_path, capsys, build, message):
    root = tmp_path / "data"
    if build is not tabular and message.startswith("holds") is False:
        root.mkdir()
    build(root)
    with pytest.raises(SystemExit) as exited:
        main(["train", "--dataset", str(root), "--model", "b0", "--output-dir", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("segformer train: error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in stderr, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize(
    "name, tree, expected",
    [
        ("ade20k", ade_tree, dict(do_reduce_labels=True, eval_short_side=512, eval_mode="whole", batch_size=16)),
        ("cityscapes", cityscapes_tree, dict(crop_size=[1024, 1024], eval_mode="slide", slide_stride=768, batch_size=8)),
        ("voc", voc_tree, dict(do_reduce_labels=False, crop_size=[512, 512], max_steps=40000)),
    ],
)
def test_example_configs_reproduce_the_papers_run_on_the_unpacked_folder(tmp_path, name, tree, expected):
    from pathlib import Path

    from segformer import train
    from segformer.train.model import build_image_processor

    root = tree(tmp_path / name)
    config = Path(__file__).parents[1] / "examples" / f"{name}_b0.yaml"
    options = train.parse_options(["--config", str(config), "--dataset", str(root), "--num-channels", "3"])
    assert options.model == "nvidia/mit-b0" and options.learning_rate == 6e-5 and options.warmup_steps == 1500
    assert {key: getattr(options, key) for key in expected} == expected
    processor = build_image_processor(options)  # what the saved model's processor records
    assert (processor.window, processor.stride) == ((1024, 768) if name == "cityscapes" else (None, None))
    assert data.open_dataset(options.dataset).form == name


def test_processor_records_a_sliding_window_that_inference_reads(tmp_path):
    from segformer import SegFormerImageProcessor
    from segformer.inference import InferenceSettings

    SegFormerImageProcessor(short_side=1024, window=1024, stride=768).save_pretrained(tmp_path / "slide")
    loaded = SegFormerImageProcessor.from_pretrained(tmp_path / "slide")
    settings = InferenceSettings.from_processor(loaded)
    assert (settings.short_side, settings.window, settings.stride) == (1024, 1024, 768)
    # A processor saved before the field existed runs whole images.
    config = json.loads((tmp_path / "slide" / "preprocessor_config.json").read_text())
    for key in ("window", "stride"):
        config.pop(key)
    (tmp_path / "slide" / "preprocessor_config.json").write_text(json.dumps(config))
    assert InferenceSettings.from_processor(SegFormerImageProcessor.from_pretrained(tmp_path / "slide")).window is None
    with pytest.raises(ValueError, match="give `window` too"):
        SegFormerImageProcessor(stride=768)
