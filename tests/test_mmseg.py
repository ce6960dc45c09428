"""mmsegmentation's SegFormer, checked against mmsegmentation itself.

tests/fixtures/mmseg-segformer holds a seeded random SegFormer made with mmsegmentation 1.2.2's own classes
(MixVisionTransformer + SegformerHead, non-trivial BatchNorm statistics), its checkpoints with 1.x and 0.x
metadata, its logits on odd-size inputs, and the label maps of mmseg's own inference (`inference_model`:
its test pipeline, OpenCV's uint8 resize, logits resized twice) on odd-size images, with the top-2 margin
of its logits at every pixel. scripts/make_mmseg_fixture.py made them. Here the converted model must give
the logits to 1e-5 (the package, and Hub code on transformers 5.x and 4.46 without it), and the label maps
for >= 99.9% of pixels and every pixel whose margin is at least 0.02 (`segformer predict`, `pipeline()`).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file

from segformer import SegFormerForSemanticSegmentation, SegFormerImageProcessor, SegFormerModel
from segformer.cli import main as cli
from segformer.conversion import ConversionError, convert
from segformer.inference import segment_images
from segformer.resize_segformer import opencv_bilinear

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg-segformer"
CHECKPOINT = FIXTURES / "model-1.x.pth"
CLASSES = ["sky", "tree", "road", "person", "car"]
IMAGES = 3
# The goal: at least this share of pixels equal to mmseg's, and every pixel where mmseg's top two logits
# are at least this far apart.
MIN_AGREEMENT, SURE_MARGIN = 0.999, 0.02

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The 1.x checkpoint converted by `segformer convert` into a Hub-ready folder."""
    folder = tmp_path_factory.mktemp("mmseg") / "model"
    cli(["convert", str(CHECKPOINT), "--output-dir", str(folder)])
    return folder


def reference_logits() -> list:
    tensors = load_file(FIXTURES / "logits.safetensors")
    return [(tensors[f"inputs.{k}"], tensors[f"logits.{k}"]) for k in range(len(tensors) // 2)]


def images_and_labels() -> list:
    """(image, mmseg's label map, mmseg's top-2 margins) of each fixture image."""
    margins = np.load(FIXTURES / "margins.npz")
    return [
        (
            Image.open(FIXTURES / f"image-{k}.png"),
            np.asarray(Image.open(FIXTURES / f"image-{k}-labels.png")),
            margins[f"image-{k}"],
        )
        for k in range(IMAGES)
    ]


def assert_like_mmseg(label_maps: list):
    for k, (label_map, (_, expected, margins)) in enumerate(zip(label_maps, images_and_labels())):
        flipped = np.asarray(label_map) != expected
        assert flipped.mean() <= 1 - MIN_AGREEMENT, f"image {k}: {flipped.sum()} of {flipped.size} pixels differ"
        sure = margins.astype(np.float32) >= SURE_MARGIN
        assert not (flipped & sure).any(), f"image {k}: {(flipped & sure).sum()} pixels with a clear margin differ"


def test_opencv_bilinear_is_opencv_to_the_bit():
    image = np.asarray(Image.open(FIXTURES / "image-0.png"))
    for path in sorted(FIXTURES.glob("cv2-resize-*.png")):
        height, width = map(int, path.stem.removeprefix("cv2-resize-").split("x"))
        assert np.array_equal(opencv_bilinear(image, (height, width)), np.asarray(Image.open(path))), path.name


def test_mmseg_resize_sizes():
    processor = SegFormerImageProcessor(resize_protocol="mmseg")
    # min(2048 / long, 512 / short), sides rounded half up, no multiple of 32.
    assert processor.input_size(97, 131) == (512, 691)
    assert processor.input_size(45, 301) == (306, 2048)  # the long side's cap decides
    assert SegFormerImageProcessor(resize_protocol="nvlabs").resize_steps(97, 131) == [(512, 691), (512, 704)]
    assert SegFormerImageProcessor(resize_protocol="transformers").input_size(97, 131) == (512, 512)


def test_transformers_protocol_is_transformers_processor():
    theirs = transformers.SegformerImageProcessor(size={"height": 512, "width": 512})
    ours = SegFormerImageProcessor(resize_protocol="transformers")
    for image, _, _ in images_and_labels():
        expected = torch.as_tensor(np.asarray(theirs(image, return_tensors="np")["pixel_values"]))
        torch.testing.assert_close(ours(image, return_tensors="pt")["pixel_values"], expected, rtol=0, atol=1e-5)
    logits = torch.randn(1, 5, 128, 128)
    expected = theirs.post_process_semantic_segmentation(
        type("Out", (), {"logits": logits})(), target_sizes=[(97, 131)]
    )
    assert torch.equal(ours.post_process_semantic_segmentation(logits, [(97, 131)])[0], expected[0])


def test_conversion_gives_mmsegs_logits_classes_and_palette(converted):
    model = SegFormerForSemanticSegmentation.from_pretrained(converted).eval()
    assert model.config.decoder_type == "mmseg"
    assert list(model.config.id2label.values()) == CLASSES
    assert model.config.palette[0] == [70, 130, 180]
    with torch.no_grad():
        for inputs, expected in reference_logits():
            torch.testing.assert_close(model(inputs).logits, expected, rtol=0, atol=1e-5)
    processor = SegFormerImageProcessor.from_pretrained(converted)
    assert (processor.resize_protocol, processor.short_side, processor.long_side) == ("mmseg", 512, 2048)


def test_0x_metadata_gives_the_same_model(converted):
    conversion = convert(FIXTURES / "model-0.x.pth")
    assert list(conversion.model.config.id2label.values()) == CLASSES
    assert conversion.model.config.palette == SegFormerForSemanticSegmentation.from_pretrained(converted).config.palette
    inputs, expected = reference_logits()[0]
    with torch.no_grad():
        torch.testing.assert_close(conversion.model(inputs).logits, expected, rtol=0, atol=1e-5)


def test_predict_gives_mmsegs_label_maps(converted, tmp_path):
    images = [image for image, _, _ in images_and_labels()]
    model = SegFormerForSemanticSegmentation.from_pretrained(converted).eval()
    assert_like_mmseg(segment_images(model, SegFormerImageProcessor.from_pretrained(converted), images))
    # What the command line writes, too.
    cli(
        [
            "predict",
            str(converted),
            *(str(FIXTURES / f"image-{k}.png") for k in range(IMAGES)),
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert_like_mmseg([np.asarray(Image.open(tmp_path / f"image-{k}_labels.png")) for k in range(IMAGES)])


def test_float_resize_is_not_mmsegs(converted):
    # The reason for the uint8 arithmetic: this package's own protocol at mmseg's sizes misses the goal.
    model = SegFormerForSemanticSegmentation.from_pretrained(converted).eval()
    processor = SegFormerImageProcessor.from_pretrained(converted)
    flipped = 0
    for image, expected, _ in images_and_labels():
        pixels = processor.pixel_values(image, do_resize=False)[None]
        pixels = torch.nn.functional.interpolate(pixels, processor.input_size(*expected.shape), mode="bilinear")
        with torch.no_grad():
            flipped += (
                processor.post_process_semantic_segmentation(model(pixels), [expected.shape])[0].numpy() != expected
            ).sum()
    assert flipped > 0


# Runs in a fresh interpreter that cannot import `segformer`: the Hub code of argv[1] on the fixture's
# inputs (logits) and through pipeline() on its images (label maps), saved to argv[2].
HUB_CODE_RUN = """
import sys
sys.modules["segformer"] = None
import numpy as np, torch, transformers
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForSemanticSegmentation, pipeline

torch.set_num_threads(1)
folder, fixtures, output = sys.argv[1:]
model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
tensors = load_file(f"{fixtures}/logits.safetensors")
results = {}
with torch.no_grad():
    for k in range(len(tensors) // 2):
        results[f"logits.{k}"] = model(tensors[f"inputs.{k}"]).logits.numpy()
processor = {"image_processor": folder} if transformers.__version__.startswith("4.") else {}
segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True, **processor)
label2id = {name: int(i) for i, name in model.config.id2label.items()}
for k in range(3):
    image = Image.open(f"{fixtures}/image-{k}.png")
    label_map = np.full((image.height, image.width), -1, np.int64)
    for segment in segmenter(image):
        label_map[np.asarray(segment["mask"]) == 255] = label2id[segment["label"]]
    results[f"labels.{k}"] = label_map
np.savez(output, **results)
print(transformers.__version__, type(model).__module__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("transformers_version", ["5", "4.46"])
def test_hub_code_without_the_package_gives_mmsegs_logits_and_label_maps(
    converted, transformers_version, request, tmp_path
):
    python = sys.executable if transformers_version == "5" else request.getfixturevalue("transformers_4_python")
    output = tmp_path / "results.npz"
    result = subprocess.run(
        [str(python), "-c", HUB_CODE_RUN, str(converted), str(FIXTURES), str(output)],
        capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    version, module = result.stdout.split()[-2:]
    assert version.startswith(transformers_version) and module.startswith("transformers_modules.")
    results = np.load(output)
    for k, (_, expected) in enumerate(reference_logits()):
        np.testing.assert_allclose(results[f"logits.{k}"], expected.numpy(), rtol=0, atol=1e-5)
    assert_like_mmseg([results[f"labels.{k}"] for k in range(IMAGES)])


def test_unplaceable_tensors_are_an_error_naming_them(tmp_path, capsys):
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    checkpoint["state_dict"]["decode_head.extra_conv.weight"] = torch.zeros(4, 4, 1, 1)
    path = tmp_path / "extra.pth"
    torch.save(checkpoint, path)
    with pytest.raises(ConversionError, match=r"decode_head\.extra_conv\.weight.*--encoder-only"):
        convert(path)
    with pytest.raises(SystemExit) as exit:
        cli(["convert", str(path), "--output-dir", str(tmp_path / "out")])
    assert exit.value.code == 2
    assert "decode_head.extra_conv.weight" in capsys.readouterr().err


def test_encoder_only_keeps_the_encoder_and_says_so(tmp_path, capsys, caplog):
    cli(["convert", str(CHECKPOINT), "--output-dir", str(tmp_path / "encoder"), "--encoder-only"])
    assert "--encoder-only: dropped the 32 tensors outside the encoder" in caplog.text
    encoder = SegFormerModel.from_pretrained(tmp_path / "encoder")
    full = convert(CHECKPOINT).model
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, full.segformer.state_dict()[name]), name


def test_transformers_source_gives_transformers_label_maps():
    # The official Hub checkpoints' protocol: the converted model with its processor gives the label maps of
    # transformers' own model and processor.
    source = Path(__file__).parent / "fixtures" / "tf4-segformer-ade"
    conversion = convert(source)
    assert conversion.processor.resize_protocol == "transformers"
    theirs = transformers.SegformerForSemanticSegmentation.from_pretrained(source).eval()
    their_processor = transformers.SegformerImageProcessor.from_pretrained(source)
    images = [image for image, _, _ in images_and_labels()]
    for image, label_map in zip(images, segment_images(conversion.model, conversion.processor, images)):
        with torch.no_grad():
            outputs = theirs(**their_processor(image, return_tensors="pt"))
        expected = their_processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(image.height, image.width)]
        )[0]
        assert np.array_equal(label_map, expected.numpy())


@pytest.fixture(scope="module")
def mmseg_model(converted):
    return SegFormerForSemanticSegmentation.from_pretrained(converted).eval()


def test_fuse_folds_every_batch_norm_and_keeps_the_logits(mmseg_model):
    fused = SegFormerForSemanticSegmentation(mmseg_model.config).eval()
    fused.load_state_dict(mmseg_model.state_dict())
    fused.fuse()
    assert fused.is_fused and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        for inputs, expected in reference_logits():
            torch.testing.assert_close(fused(inputs).logits, expected, rtol=0, atol=1e-5)


def test_int8_quantizes_the_mmseg_decoder_and_stays_close(mmseg_model):
    from segformer.quantization import quantize_int8

    quantized = quantize_int8(mmseg_model)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.decode_head.modules())
    assert not any(type(module) is torch.nn.Linear for module in quantized.modules())
    inputs, expected = reference_logits()[0]
    with torch.no_grad():
        error = (quantized(inputs).logits - expected).abs().max() / expected.abs().max()
    assert 0 < error <= 0.1


@pytest.mark.slow
def test_onnx_export_of_a_converted_mmseg_model(mmseg_model, tmp_path):
    from segformer.export import export, onnx_runner

    differences = export(
        mmseg_model, tmp_path / "model.onnx", "onnx", sample_size=(64, 64), check_sizes=[(64, 64), (67, 93)]
    )
    assert max(differences.values()) <= 1e-5
    inputs, expected = reference_logits()[0]
    torch.testing.assert_close(onnx_runner(tmp_path / "model.onnx")(inputs), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_converted_mmseg_model_fine_tunes_with_a_new_head(converted, tmp_path, capsys):
    from segformer import train

    args = ["--model", str(converted), "--output-dir", str(tmp_path / "run"), "--crop-size", "64", "64", "--scale", "64", "64",
            "--max-train-samples", "8", "--max-eval-samples", "2", "--batch-size", "4", "--eval-batch-size", "2",
            "--max-steps", "3", "--eval-steps", "3", "--report-to", "none", "--num-overlays", "0"]  # fmt: skip
    train.run(train.parse_options(args))
    assert "newly initialised decode head" in capsys.readouterr().out  # the built-in dataset has 4 labels, not 5
    start, tuned = (
        SegFormerForSemanticSegmentation.from_pretrained(converted),
        SegFormerForSemanticSegmentation.from_pretrained(tmp_path / "run" / "model"),
    )
    assert tuned.config.decoder_type == "mmseg" and tuned.config.num_labels == 4
    assert not torch.equal(tuned.decode_head.fusion_conv.conv.weight, start.decode_head.fusion_conv.conv.weight)


def test_source_protocol_is_one_pass_and_test_time_augmentation_is_this_packages():
    from segformer.inference import MULTI_SCALE, InferenceSettings

    processor = SegFormerImageProcessor(resize_protocol="mmseg")
    assert InferenceSettings.from_processor(processor).resize_protocol == "mmseg"
    assert InferenceSettings.from_processor(processor, **MULTI_SCALE).resize_protocol == "segformer"
    assert InferenceSettings.from_processor(processor, window=64).resize_protocol == "segformer"


def test_stock_transformers_export_refuses_the_mmseg_head(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        cli(["convert", str(CHECKPOINT), "--output-dir", str(tmp_path / "out"), "--to", "transformers"])
    assert exit.value.code == 2 and "has only the All-MLP decoder" in capsys.readouterr().err


def test_a_converted_mmseg_model_pushes_and_loads_back_by_repo_id(converted, hub_server, hub_repo_id):
    model = SegFormerForSemanticSegmentation.from_pretrained(converted).eval()
    model.push_to_hub(hub_repo_id)
    files = hub_server.files(hub_repo_id)
    assert {"decode_heads_segformer.py", "resize_segformer.py", "preprocessor_config.json"} <= set(files)
    loaded = SegFormerForSemanticSegmentation.from_pretrained(hub_repo_id).eval()
    processor = SegFormerImageProcessor.from_pretrained(hub_repo_id)
    assert (loaded.config.decoder_type, processor.resize_protocol) == ("mmseg", "mmseg")
    with torch.no_grad():
        for inputs, expected in reference_logits():
            torch.testing.assert_close(loaded(inputs).logits, expected, rtol=0, atol=1e-5)
    assert_like_mmseg(segment_images(loaded, processor, [image for image, _, _ in images_and_labels()]))
