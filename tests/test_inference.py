"""Inference: post-processing, the paper's resize/sliding-window protocols, TTA, the decoder's cheap
order, label-map pictures and the `segformer predict` command."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segformer import SegFormerForSemanticSegmentation
from segformer.cli import main as cli
from segformer.demo import sample_image
from segformer.image_processing_segformer import SegFormerImageProcessor, resized_size
from segformer.inference import (
    InferenceSettings,
    model_logits,
    post_process_semantic_segmentation,
    segment,
    segment_probabilities,
    sliding_window_logits,
    window_starts,
)
from segformer.visualization import classes_present, default_palette, label_image, legend


@pytest.fixture
def model(tiny_config):
    model = SegFormerForSemanticSegmentation(tiny_config()).eval()
    with torch.no_grad():
        bn = model.decode_head.linear_fuse.bn
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_(1, 0.2)
        bn.bias.normal_(0, 0.2)
    return model


class Output:
    def __init__(self, logits):
        self.logits = logits


class PointwiseModel(torch.nn.Module):
    """A 1x1 conv at full resolution: each pixel's logits depend on that pixel alone, so any crop of
    the image gives the same logits there as the whole image."""

    dtype = torch.float32

    def __init__(self, num_labels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_labels, 1)
        self.input_sizes = []

    def forward(self, pixel_values):
        self.input_sizes.append(tuple(pixel_values.shape[-2:]))
        return Output(self.conv(pixel_values))


# ---------------------------------------------------------------------------------------------------
# Post-processing

def test_post_process_upsamples_each_image_to_its_own_size_then_takes_the_argmax():
    logits = torch.randn(2, 4, 8, 10)
    sizes = [(30, 41), (17, 9)]
    label_maps = post_process_semantic_segmentation(logits, sizes)
    for label_map, image_logits, size in zip(label_maps, logits, sizes):
        assert label_map.shape == size
        expected = F.interpolate(image_logits[None], size=size, mode="bilinear", align_corners=False).argmax(1)[0]
        assert torch.equal(label_map, expected)
    assert post_process_semantic_segmentation(logits)[0].shape == (8, 10)


def test_post_process_single_label_is_foreground_where_the_logit_is_positive():
    logits = torch.tensor([[[[-1.0, 2.0], [0.5, -3.0]]]])
    assert post_process_semantic_segmentation(logits)[0].tolist() == [[0, 1], [1, 0]]


def test_post_process_wants_one_size_per_image():
    with pytest.raises(ValueError, match="2 target sizes for a batch of 3"):
        post_process_semantic_segmentation(torch.randn(3, 2, 4, 4), [(8, 8), (8, 8)])


# ---------------------------------------------------------------------------------------------------
# Protocols

@pytest.mark.parametrize(
    "size, short_side, scale, expected",
    [
        ((480, 640), 512, 1.0, (512, 704)),  # 640 * 512 / 480 = 683 -> 704
        ((640, 480), 512, 1.0, (704, 512)),
        ((1024, 2048), 1024, 0.5, (512, 1024)),
        ((100, 70), None, 1.0, (128, 96)),  # no resize: only rounded up to a multiple of 32
        ((64, 64), None, 1.5, (96, 96)),
    ],
)
def test_aligned_size_keeps_the_aspect_ratio_and_rounds_up_to_32(size, short_side, scale, expected):
    assert resized_size(*size, short_side, scale) == expected


@pytest.mark.parametrize("length, window, stride", [(100, 40, 30), (2048, 1024, 768), (1024, 1024, 768), (30, 40, 30)])
def test_windows_cover_the_side_every_stride_and_end_flush(length, window, stride):
    starts = window_starts(length, window, stride)
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + window] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] == max(length - window, 0)
    assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))


def test_sliding_window_averages_overlaps_at_the_right_offsets():
    model = PointwiseModel()
    pixel_values = torch.randn(2, 3, 70, 95)
    with torch.no_grad():
        windowed = sliding_window_logits(model, pixel_values, window=32, stride=24)
        whole = model(pixel_values).logits
    torch.testing.assert_close(windowed, whole)
    # The model saw windows only: its memory is bounded by the window, not the image.
    assert model.input_sizes[:-1] == [(32, 32)] * (len(window_starts(70, 32, 24)) * len(window_starts(95, 32, 24)))


def test_sliding_window_larger_than_the_image_is_one_whole_pass(model):
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(sliding_window_logits(model, pixel_values, 128, 96), model_logits(model, pixel_values))


def test_flip_tta_is_mirror_equivariant(model):
    pixel_values = torch.randn(1, 3, 64, 96)
    settings = InferenceSettings(short_side=None, scales=(0.75, 1.0), flip=True)
    with torch.no_grad():
        probabilities = segment_probabilities(model, pixel_values, settings)
        mirrored = segment_probabilities(model, pixel_values.flip(-1), settings)
    torch.testing.assert_close(mirrored, probabilities.flip(-1), rtol=1e-5, atol=1e-6)


def test_multi_scale_probabilities_are_at_the_image_size_and_average_the_passes(model):
    pixel_values = torch.randn(1, 3, 64, 96)
    one_scale = InferenceSettings(short_side=None)
    with torch.no_grad():
        single = segment_probabilities(model, pixel_values, one_scale)
        expected = model(pixel_values).logits
        expected = F.interpolate(expected, size=(64, 96), mode="bilinear", align_corners=False).softmax(1)
        torch.testing.assert_close(single, expected)
        scaled = segment_probabilities(model, pixel_values, InferenceSettings(short_side=None, scales=(1.5,)))
        both = segment_probabilities(model, pixel_values, InferenceSettings(short_side=None, scales=(1.0, 1.5)))
    assert both.shape == (1, 5, 64, 96)
    torch.testing.assert_close(both.sum(1), torch.ones(1, 64, 96))
    torch.testing.assert_close(both, (single + scaled) / 2)


def test_segment_batches_same_size_images_and_returns_maps_at_each_size(model):
    images = [torch.randn(3, 40, 56), torch.randn(3, 50, 33), torch.randn(3, 40, 56)]
    settings = InferenceSettings(short_side=64)
    batched = segment(model, images, settings, batch_size=2)
    one_by_one = [segment(model, [image], settings)[0] for image in images]
    assert [tuple(m.shape) for m in batched] == [(40, 56), (50, 33), (40, 56)]
    assert all(torch.equal(a, b) for a, b in zip(batched, one_by_one))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=0), "`window` must be a positive"),
        (dict(stride=16), "give `window` too"),
        (dict(scales=(1.0, -0.5)), "`scales` must be positive"),
        (dict(short_side=512.5), "`short_side` must be a positive"),
    ],
)
def test_bad_settings_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InferenceSettings(**kwargs)


# ---------------------------------------------------------------------------------------------------
# The decoder's cheap order is the original function

def concat_order_logits(model, pixel_values):
    """The original decode head, step by step: project, upsample, concatenate (c4..c1), fuse conv, BN, ReLU."""
    head = model.decode_head
    features = model.segformer(pixel_values, output_hidden_states=True).hidden_states
    size = features[0].shape[-2:]
    projected = []
    for feature, linear in zip(features, head.linear_c):
        x = linear(feature.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(feature.shape[0], -1, *feature.shape[-2:])
        projected.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    x = head.linear_fuse.conv(torch.cat(projected[::-1], dim=1))
    return head.linear_pred(F.relu(head.linear_fuse.bn(x)))


@pytest.mark.parametrize("training", [False, True])
def test_decoder_computes_the_concatenation_order_function(tiny_config, training):
    model = SegFormerForSemanticSegmentation(tiny_config(classifier_dropout_prob=0.0, drop_path_rate=0.0))
    model.decode_head.linear_fuse.bn.running_var.uniform_(0.5, 2.0)
    model.train(training)
    pixel_values = torch.randn(2, 3, 45, 61)
    # In training BatchNorm normalises with the batch's statistics, in eval with the running ones.
    torch.testing.assert_close(model(pixel_values).logits, concat_order_logits(model, pixel_values), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Pictures

def test_label_png_keeps_the_class_ids_and_shows_the_palette(tmp_path):
    label_map = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    palette = default_palette(3)
    label_image(label_map, palette).save(tmp_path / "labels.png")
    with Image.open(tmp_path / "labels.png") as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), label_map)
        assert np.array_equal(np.asarray(image.convert("RGB"))[0, 1], palette[1])
    big = np.array([[0, 300]], np.int64)
    label_image(big, palette).save(tmp_path / "big.png")
    with Image.open(tmp_path / "big.png") as image:
        assert np.asarray(image).tolist() == [[0, 300]]


def test_legend_lists_the_classes_present_largest_first():
    label_map = np.array([[2, 2, 2, 0], [2, 2, 0, 7]])
    assert [class_id for class_id, _ in classes_present(label_map)] == [2, 0, 7]
    assert classes_present(label_map)[0][1] == pytest.approx(5 / 8)
    panel = legend(label_map, default_palette(8), {0: "road", 2: "sky", 7: "car"}, height=200)
    assert panel.height == 200 and panel.width > 50
    pixels = np.asarray(panel)
    for class_id in (0, 2, 7):  # every swatch colour is drawn
        assert (pixels == default_palette(8)[class_id]).all(-1).any()


# ---------------------------------------------------------------------------------------------------
# segformer predict

@pytest.fixture
def saved_model(model, tmp_path):
    model.config.id2label = {0: "sky", 1: "grass", 2: "house", 3: "sun", 4: "door"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_predict_writes_label_maps_and_overlays_with_a_legend(saved_model, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    sample_image(96).save(images / "square.png")
    sample_image(80).resize((120, 80)).save(images / "wide.jpg")
    out = tmp_path / "out"
    cli(["predict", str(saved_model), str(images), "--output-dir", str(out), "--short-side", "64", "--batch-size", "2"])
    model = SegFormerForSemanticSegmentation.from_pretrained(saved_model).eval()
    processor = SegFormerImageProcessor.from_pretrained(saved_model)
    for name, size in (("square", (96, 96)), ("wide", (80, 120))):
        with Image.open(out / f"{name}_labels.png") as labels:
            written = np.asarray(labels)
        with Image.open(images / f"{name}{'.png' if name == 'square' else '.jpg'}") as image:
            pixel_values = processor(images=image, do_resize=False, return_tensors="pt")["pixel_values"]
        expected = segment(model, list(pixel_values), InferenceSettings(short_side=64))[0].numpy()
        assert written.shape == size
        assert np.array_equal(written, expected)
        with Image.open(out / f"{name}_overlay.png") as overlay:
            assert overlay.height == size[0] and overlay.width > size[1]  # the legend sits to the right


@pytest.mark.slow
def test_predict_takes_globs_sliding_windows_and_tta(saved_model, tmp_path):
    sample_image(72).save(tmp_path / "a.png")
    sample_image(72).save(tmp_path / "b.png")
    out = tmp_path / "out"
    cli(["predict", str(saved_model), str(tmp_path / "*.png"), "--output-dir", str(out), "--no-resize",
         "--window", "64", "--stride", "48", "--scales", "1", "1.25", "--flip"])
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.png", "a_overlay.png", "b_labels.png", "b_overlay.png"]


# A missing input is a usage error (2); an unreadable image is named and skipped, and the job ends with 1.
@pytest.mark.parametrize(
    "argument, message, status", [("missing.png", "no file, folder or glob", 2), ("notes.txt", "cannot read", 1)]
)
def test_predict_rejects_bad_inputs_clearly(saved_model, tmp_path, argument, message, status, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(SystemExit) as exit_info:
        cli(["predict", str(saved_model), str(tmp_path / argument), "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == status
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("segformer predict: error:") and message in error and argument in error
