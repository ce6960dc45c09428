"""Any number of input channels: the adapted first patch embedding (a one-channel model adapted from an
RGB model gives the RGB model's logits on grey images), reading grey, 16-bit, RGBA, multi-page TIFF and
.npy images, the N-channel augmentation, measured image statistics, and clear errors on band counts."""

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from segformer import SegFormerBackbone, SegFormerConfig, SegFormerForSemanticSegmentation, SegFormerImageProcessor, data
from segformer.cli import main
from segformer.data.statistics import image_statistics
from segformer.errors import DataError, InputError
from segformer.modeling_segformer import adapt_input_channels
from segformer.files import find_images, open_image
from segformer.image_processing_segformer import to_array
from segformer.modeling_segformer import adapted_patch_weight

from tests.test_cli import assert_one_error_line

PATCH_WEIGHT = "segformer.stages.0.patch_embed.proj.weight"


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("rgb") / "model"
    torch.manual_seed(0)
    SegFormerForSemanticSegmentation(tiny_config()).save_pretrained(folder)
    return folder


def grey_image(seed=0, size=(48, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------
# The adapted patch embedding


def test_one_channel_model_on_grey_equals_the_rgb_model_on_grey_repeated(rgb_folder):
    # The identity needs the grey normalisation to be each RGB channel's: with per-channel means (ImageNet's)
    # the RGB model sees (g - m_c) / s_c in channel c, which no single grey (g - m) / s matches. So both
    # processors use mean 0.45 and std 0.23 for every channel.
    rgb = SegFormerForSemanticSegmentation.from_pretrained(rgb_folder).eval()
    grey = SegFormerForSemanticSegmentation.from_pretrained(rgb_folder, num_channels=1).eval()
    assert grey.config.num_channels == 1
    rgb_processor = SegFormerImageProcessor(short_side=None, image_mean=[0.45] * 3, image_std=[0.23] * 3)
    grey_processor = SegFormerImageProcessor(short_side=None, num_channels=1, image_mean=[0.45], image_std=[0.23])
    image = grey_image()
    rgb_input = rgb_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
    grey_input = grey_processor(image, return_tensors="pt")["pixel_values"]
    assert rgb_input.shape[1] == 3 and grey_input.shape[1] == 1
    with torch.no_grad():
        expected, actual = rgb(rgb_input).logits, grey(grey_input).logits
    assert torch.allclose(actual, expected, atol=1e-5), (actual - expected).abs().max()


@pytest.mark.parametrize("num_channels", [1, 2, 4, 5])
def test_adapted_kernel(num_channels, rgb_folder):
    rgb = SegFormerForSemanticSegmentation.from_pretrained(rgb_folder)
    adapted = SegFormerForSemanticSegmentation.from_pretrained(rgb_folder, num_channels=num_channels)
    weight = rgb.state_dict()[PATCH_WEIGHT]
    new = adapted.state_dict()[PATCH_WEIGHT]
    assert new.shape == (weight.shape[0], num_channels, *weight.shape[2:])
    if num_channels == 1:
        assert torch.allclose(new[:, 0], weight.sum(dim=1))
    else:
        for channel in range(num_channels):  # R, G, B, R, G, ... times 3/N
            assert torch.allclose(new[:, channel], weight[:, channel % 3] * 3 / num_channels)
    # Everything else is the checkpoint's.
    for name, value in rgb.state_dict().items():
        if name != PATCH_WEIGHT:
            assert torch.equal(adapted.state_dict()[name], value), name
    outputs = adapted(torch.randn(1, num_channels, 64, 64), labels=torch.zeros(1, 64, 64, dtype=torch.long))
    outputs.loss.backward()
    assert adapted.segformer.stages[0].patch_embed.proj.weight.grad is not None


def test_adaptation_is_logged_and_saved(rgb_folder, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        model = SegFormerForSemanticSegmentation.from_pretrained(rgb_folder, num_channels=4).eval()
    assert "segformer.stages[0].patch_embed.proj.weight" in caplog.text and "from 3 to 4" in caplog.text
    model.save_pretrained(tmp_path)
    loaded = SegFormerForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert loaded.config.num_channels == 4
    pixel_values = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).logits, model(pixel_values).logits)


def test_same_channel_count_changes_nothing(rgb_folder):
    model = SegFormerForSemanticSegmentation.from_pretrained(rgb_folder, num_channels=3)
    reference = SegFormerForSemanticSegmentation.from_pretrained(rgb_folder)
    assert torch.equal(model.state_dict()[PATCH_WEIGHT], reference.state_dict()[PATCH_WEIGHT])


def test_adapted_patch_weight_sums_and_rescales():
    weight = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)
    assert adapted_patch_weight(weight, 1)[:, :, 0, 0].tolist() == [[3.0], [12.0]]
    assert adapted_patch_weight(weight, 2)[:, :, 0, 0].tolist() == [[0.0, 1.5], [4.5, 6.0]]


@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_channel_count_fails(rgb_folder, value):
    with pytest.raises(ValueError, match="num_channels"):
        SegFormerForSemanticSegmentation.from_pretrained(rgb_folder, num_channels=value)


# ---------------------------------------------------------------------------------------------------
# Reading images


def test_grey_and_16_bit_images():
    grey = grey_image()
    assert to_array(grey, 1).shape == (40, 48, 1)
    assert np.array_equal(to_array(grey, 3), np.repeat(to_array(grey, 1), 3, axis=-1))
    wide = Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16))
    assert wide.mode.startswith("I;16") and np.allclose(to_array(wide, 1), 255.0)
    assert np.allclose(to_array(np.full((4, 5, 2), 65535, dtype=np.uint16), 2), 255.0)


def test_rgba_keeps_alpha_for_four_channels_only():
    rgba = Image.fromarray(np.dstack([np.full((3, 4), v, np.uint8) for v in (10, 20, 30, 40)]), "RGBA")
    assert to_array(rgba, 4)[0, 0].tolist() == [10, 20, 30, 40]
    assert to_array(rgba, 3)[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="3 channels but the model takes 4"):
        to_array(rgba.convert("RGB"), 4)


def test_arrays_pass_through():
    array = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32) * 300
    assert np.array_equal(to_array(array, 5), array)
    with pytest.raises(ValueError, match="5 channels but the model takes 3"):
        to_array(array, 3)


def test_npy_files(tmp_path):
    array = np.random.default_rng(0).random((6, 7, 4)).astype(np.float32)
    np.save(tmp_path / "bands.npy", array)
    assert find_images([str(tmp_path)]) == [tmp_path / "bands.npy"]
    assert np.array_equal(open_image(tmp_path / "bands.npy"), array)
    raw = (tmp_path / "bands.npy").read_bytes()
    assert np.array_equal(open_image({"bytes": raw, "path": None}), array)
    with pytest.raises(InputError, match="bands.npy: the image has 4 channels but the model takes 3"):
        open_image(tmp_path / "bands.npy", num_channels=3)
    np.save(tmp_path / "objects.npy", np.array([{}]), allow_pickle=True)
    with pytest.raises(InputError, match="objects.npy"):
        open_image(tmp_path / "objects.npy")


def test_multi_page_tiff_pages_are_bands(tmp_path):
    pages = [np.full((5, 6), 1000 * (i + 1), dtype=np.uint16) for i in range(5)]
    images = [Image.fromarray(page) for page in pages]
    images[0].save(tmp_path / "stack.tif", save_all=True, append_images=images[1:])
    bands = open_image(tmp_path / "stack.tif", num_channels=5)
    assert bands.shape == (5, 6, 5)
    assert np.allclose(bands[0, 0], [1000 * (i + 1) * 255 / 65535 for i in range(5)], rtol=1e-6)
    assert np.array_equal(to_array(bands, 5), bands)


def test_processor_defaults_and_saves_its_channels(tmp_path):
    assert SegFormerImageProcessor().image_mean == [0.485, 0.456, 0.406]
    processor = SegFormerImageProcessor(num_channels=4)
    assert processor.image_mean == [0.449] * 4 and processor.image_std == [0.226] * 4
    SegFormerImageProcessor(num_channels=2, image_mean=[0.1, 0.2], image_std=[0.3, 0.4]).save_pretrained(tmp_path)
    loaded = SegFormerImageProcessor.from_pretrained(tmp_path)
    assert (loaded.num_channels, loaded.image_mean, loaded.image_std) == (2, [0.1, 0.2], [0.3, 0.4])
    pixels = loaded(np.full((32, 32, 2), 255.0), return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels[0, :, 0, 0], torch.tensor([(1 - 0.1) / 0.3, (1 - 0.2) / 0.4]))
    with pytest.raises(ValueError, match="`image_mean` has 3 values but the images have num_channels=2"):
        SegFormerImageProcessor(num_channels=2, image_mean=[0.5] * 3)


# ---------------------------------------------------------------------------------------------------
# Augmentation, datasets and statistics


def band_dataset(folder, count=4, channels=4, size=(40, 48), bad_index=None):
    """A paired folder split of `.npy` images (band k = band 0 times k + 1) and PNG masks."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for index in range(count):
        base = rng.random(size).astype(np.float32) * 50
        bands = channels + 1 if index == bad_index else channels
        np.save(folder / "images" / f"{index}.npy", np.stack([base * (k + 1) for k in range(bands)], axis=-1))
        Image.fromarray(rng.integers(0, 3, size, dtype=np.uint8)).save(folder / "labels" / f"{index}.png")
    return data.open_dataset(str(folder)).split("train")


def test_train_transform_moves_every_band_together(tmp_path):
    split = band_dataset(tmp_path / "data")
    transform = data.TrainTransform(crop_size=(32, 32), scale=(64, 48), mean=(0.0,) * 4, std=(1.0,) * 4)
    assert transform.num_channels == 4
    dataset = data.SegmentationDataset(split, transform, num_labels=3)
    for index in range(len(dataset)):
        pixels = dataset[index]["pixel_values"]
        assert pixels.shape == (4, 32, 32)
        for k in range(1, 4):
            assert torch.allclose(pixels[k], pixels[0] * (k + 1), rtol=1e-5, atol=1e-6)
    # Deterministic per (seed, epoch, index), as for RGB.
    assert torch.equal(dataset[1]["pixel_values"], dataset[1]["pixel_values"])


def test_a_sample_with_other_bands_is_a_data_error(tmp_path):
    split = band_dataset(tmp_path / "data", bad_index=2)
    dataset = data.SegmentationDataset(split, data.EvalTransform(mean=(0.5,) * 4, std=(0.2,) * 4), num_labels=3)
    dataset.load_pair(1)
    with pytest.raises(DataError, match=r"train\[2\] \(.*2\.npy\): the image has 5 channels but the model takes 4"):
        dataset.load_pair(2)


def test_image_statistics_are_numpys_and_reduce_exactly(tmp_path):
    split = band_dataset(tmp_path / "data", count=5)
    dataset = data.SegmentationDataset(split, data.EvalTransform(mean=(0.5,) * 4, std=(0.2,) * 4), num_labels=3)
    stacked = np.stack([np.load(tmp_path / "data" / "images" / f"{i}.npy") for i in range(5)]).reshape(-1, 4) / 255
    mean, std = image_statistics(dataset)
    assert np.allclose(mean, stacked.mean(axis=0), atol=1e-6) and np.allclose(std, stacked.std(axis=0), atol=1e-6)
    # Two processes, each its share, summed: the same numbers.
    from segformer.data.statistics import channel_sums

    shares = [channel_sums(dataset, range(rank, 5, 2)) for rank in range(2)]
    assert image_statistics(dataset, 0, 2, reduce=lambda totals: shares[0] + shares[1]) == (mean, std)


# ---------------------------------------------------------------------------------------------------
# Commands


@pytest.mark.slow
def test_train_and_predict_on_four_band_npy_images(tmp_path, capsys):
    band_dataset(tmp_path / "data" / "train", count=4, size=(64, 64))
    band_dataset(tmp_path / "data" / "validation", count=2, size=(64, 64))
    (tmp_path / "data" / "id2label.json").write_text('{"0": "a", "1": "b", "2": "c"}')
    output = tmp_path / "run"
    main([
        "train", "--dataset", str(tmp_path / "data"), "--model", "b0", "--num-channels", "4", "--image-stats", "auto",
        "--loss", "cross_entropy+dice", "--class-weights", "1,2,1", "--max-steps", "2", "--batch-size", "2",
        "--crop-size", "64", "64", "--scale", "64", "64", "--eval-short-side", "0", "--num-workers", "0",
        "--report-to", "none", "--num-overlays", "1", "--output-dir", str(output),
    ])  # fmt: skip
    model = SegFormerForSemanticSegmentation.from_pretrained(output / "model")
    assert (model.config.num_channels, model.config.loss_type, model.config.class_weights) == (
        4, "cross_entropy+dice", [1.0, 2.0, 1.0]
    )
    processor = SegFormerImageProcessor.from_pretrained(output / "model")
    assert processor.num_channels == 4 and len(processor.image_mean) == 4 and processor.image_mean != [0.449] * 4
    main(["predict", str(output / "model"), str(tmp_path / "data" / "validation" / "images"), "--output-dir",
          str(tmp_path / "predicted")])  # fmt: skip
    assert (tmp_path / "predicted" / "0_labels.png").is_file() and (tmp_path / "predicted" / "1_overlay.png").is_file()
    # An image of 3 bands for this 4-channel model: one error line naming the file (skipped by default, with
    # exit status 1; --on-error stop ends the job there, with status 2).
    Image.new("RGB", (64, 64)).save(tmp_path / "rgb.png")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["predict", str(output / "model"), str(tmp_path / "rgb.png"), "--output-dir", str(tmp_path / "p2"),
              "--on-error", "stop"])  # fmt: skip
    assert_one_error_line("predict", exited.value.code, capsys.readouterr().err, "rgb.png")


def test_png_bytes_with_four_channels_open_as_rgba():
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 3), (1, 2, 3, 4)).save(buffer, format="PNG")
    image = open_image(buffer.getvalue(), num_channels=4)
    assert to_array(image, 4)[0, 0].tolist() == [1, 2, 3, 4]


def test_build_model_adapts_a_checkpoint_and_sets_the_loss(rgb_folder):
    from segformer.errors import OptionError
    from segformer.train.model import build_image_processor, build_model
    from segformer.train.options import TrainingOptions

    id2label = {0: "a", 1: "b", 2: "c"}
    options = TrainingOptions(model=str(rgb_folder), num_channels=1, loss="focal", focal_gamma=1.5, class_weights="1,2,3")
    model = build_model(options, id2label, log=lambda message: None)
    assert model.config.num_channels == 1 and model.segformer.stages[0].patch_embed.proj.in_channels == 1
    assert (model.config.loss_type, model.config.focal_gamma, model.config.class_weights) == ("focal", 1.5, [1, 2, 3])
    assert build_image_processor(options).image_mean == [0.449]
    with pytest.raises(OptionError, match="--class-weights has 2 values but the model has 3 labels"):
        build_model(TrainingOptions(model="b0", class_weights="1,2"), id2label)
    with pytest.raises(OptionError, match="--class-weights auto needs the dataset audit"):
        build_model(TrainingOptions(model="b0", class_weights="auto"), id2label)
    built = build_model(TrainingOptions(model="b0", class_weights="auto"), id2label, auto_class_weights=[0.5, 1, 2])
    assert built.config.class_weights == [0.5, 1.0, 2.0]
    with pytest.raises(OptionError, match="--image-mean needs one value per channel"):
        build_image_processor(TrainingOptions(model="b0", image_mean=[0.5]))


def test_pipeline_segments_grey_images_with_a_one_channel_model(rgb_folder, tmp_path):
    # transformers' pipeline converts every image to RGB first; the one-channel processor reads it back
    # as grey (exactly, for a grey image), so the pipeline gives the processor's own label map.
    from transformers import pipeline

    from segformer.inference import segment_images

    model = SegFormerForSemanticSegmentation.from_pretrained(rgb_folder, num_channels=1).eval()
    processor = SegFormerImageProcessor(short_side=None, num_channels=1)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    image = grey_image(size=(64, 64))
    segmenter = pipeline("image-segmentation", model=str(tmp_path), image_processor=processor)
    label_map = np.full((64, 64), -1)
    label2id = {name: int(i) for i, name in model.config.id2label.items()}
    for segment in segmenter(image):
        label_map[np.asarray(segment["mask"]) == 255] = label2id[segment["label"]]
    assert np.array_equal(label_map, segment_images(model, processor, [image])[0])


def test_adapting_a_backbone_updates_its_stem_channels():
    backbone = SegFormerBackbone(SegFormerConfig(depths=[1, 1, 1, 1]))
    adapt_input_channels(backbone, 1)
    assert backbone.num_features[0] == backbone.out_feature_channels["stem"] == backbone.config.num_channels == 1
