"""`segformer pretrain`: the hand-written parts of the recipe (Mixup/CutMix targets, soft cross-entropy,
the schedule, reproducible augmentation, the processor's centre crop), the options' layers, the bad inputs
(one error line, status 2, before training), a run's outputs and an exact resume."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from segformer import (
    SegFormerConfig,
    SegFormerForImageClassification,
    SegFormerForSemanticSegmentation,
    SegFormerImageProcessor,
)
from segformer.cli import main
from segformer.pretrain import BUILTIN_PRESET, PretrainOptions, parse_options
from segformer.pretrain.augment import TrainAugmentation
from segformer.pretrain.mixing import Mixing, cutmix_box, smoothed_targets, soft_cross_entropy
from segformer.pretrain.model import cosine_with_warmup
from segformer.pretrain.synthetic import BUILTIN_CLASSES, generate_classification_sample

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLES = Path(__file__).parents[1] / "examples"

# A MiT small enough for a few steps in a second, with PVT's stage layout.
TINY = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 2], mlp_ratios=[2, 2, 2, 2])
RUN = ["--image-size", "32", "--batch-size", "4", "--eval-batch-size", "8", "--num-workers", "0", "--report-to", "none",
       "--logging-steps", "1", "--eval-steps", "100", "--warmup-steps", "1"]  # fmt: skip


def write_folder(root, classes: dict, size: int = 40):
    """An image folder: {split: {class: number of images}}, each image a random colour field."""
    rng = np.random.default_rng(0)
    for split, counts in classes.items():
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images"), {"train": {"cat": 6, "dog": 6, "fox": 4}, "val": {"cat": 2, "dog": 2}})


def test_smoothed_targets_sum_to_one_and_match_torch_label_smoothing():
    labels = torch.tensor([0, 3, 2])
    targets = smoothed_targets(labels, 4, 0.1)
    assert torch.allclose(targets.sum(-1), torch.ones(3))
    assert targets[1, 3] == pytest.approx(0.9 + 0.025) and targets[1, 0] == pytest.approx(0.025)
    logits = torch.randn(3, 4)
    assert soft_cross_entropy(logits, targets) == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), abs=1e-6)


def test_mixup_mixes_images_and_targets_by_the_same_lambda():
    pixels, labels = torch.arange(4.0)[:, None, None, None].expand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, targets, lam, kind = Mixing(4, mixup_alpha=0.8, cutmix_alpha=0.0, smoothing=0.0)(pixels, labels, torch.Generator().manual_seed(1))
    assert kind == "mixup" and 0 < lam < 1
    assert torch.allclose(mixed[0], torch.full((3, 8, 8), 3 * (1 - lam)))  # image 0 mixed with image 3 (the mirror)
    assert torch.allclose(targets.sum(-1), torch.ones(4))
    assert targets[0, 0] == pytest.approx(lam) and targets[0, 3] == pytest.approx(1 - lam)


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_lambda_is_the_share_of_the_image_kept(seed):
    pixels = torch.arange(4.0)[:, None, None, None].expand(4, 3, 20, 30)
    mixing = Mixing(4, mixup_alpha=0.0, cutmix_alpha=1.0, smoothing=0.1)
    mixed, targets, lam, kind = mixing(pixels, torch.arange(4), torch.Generator().manual_seed(seed))
    kept = (mixed[0] == 0).float().mean().item()  # image 0's own pixels; the pasted box is image 3's
    assert kind == "cutmix" and kept == pytest.approx(lam)
    assert torch.allclose(targets.sum(-1), torch.ones(4))
    assert targets[0, 0] == pytest.approx(lam * (0.9 + 0.025) + (1 - lam) * 0.025)


def test_cutmix_box_stays_inside_the_image():
    generator = torch.Generator().manual_seed(0)
    for lam in (0.0, 0.3, 0.99):
        top, bottom, left, right = cutmix_box(10, 12, lam, generator)
        assert 0 <= top <= bottom <= 10 and 0 <= left <= right <= 12


def test_switch_prob_chooses_cutmix_about_as_often_as_asked():
    mixing, pixels = Mixing(3, switch_prob=0.5), torch.zeros(2, 3, 8, 8)
    kinds = [mixing(pixels, torch.tensor([0, 1]), torch.Generator().manual_seed(s))[3] for s in range(200)]
    assert 70 < kinds.count("cutmix") < 130


def test_schedule_warms_up_then_follows_the_cosine_to_the_floor():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = cosine_with_warmup(optimizer, 1e-3, 1e-6, 1e-5, warmup_steps=4, total_steps=14)
    rates = []
    for _ in range(15):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-6) and rates[4] == pytest.approx(1e-3)
    assert rates[9] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5) and rates[14] == pytest.approx(1e-5)
    assert all(a < b for a, b in zip(rates[:4], rates[1:5])) and all(a > b for a, b in zip(rates[4:14], rates[5:]))


def test_augmentation_depends_on_epoch_and_index_only():
    options = PretrainOptions(image_size=24, randaugment_ops=2, random_erasing=0.5)
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    first, again = TrainAugmentation(options, seed=3), TrainAugmentation(options, seed=3)
    out = first(image, epoch=1, index=5)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    first(image, epoch=0, index=0)  # another draw in between changes nothing
    assert np.array_equal(first(image, 1, 5), out) and np.array_equal(again(image, 1, 5), out)
    assert not np.array_equal(first(image, 2, 5), out)


def test_processor_centre_crop_is_deits_test_protocol():
    processor = SegFormerImageProcessor(short_side=256, align=1, crop_size=224)
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, 200:] = 255  # right half white: the crop's centre column sits on the edge
    pixels = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224) and processor.input_size(300, 400) == (224, 224)
    assert pixels[0, 0, :, 111].max() < 0 < pixels[0, 0, :, 113].min()
    with pytest.raises(ValueError, match="crop"):
        processor.post_process_semantic_segmentation(torch.zeros(1, 2, 8, 8))


def test_builtin_classes_are_the_segmentation_textures_on_each_shape():
    assert len(BUILTIN_CLASSES) == 9 and BUILTIN_CLASSES[0] == "stripes ellipse"
    image = generate_classification_sample(64, 7, np.random.default_rng(0))
    assert image.size == (64, 64) and image.mode == "RGB"


def test_options_layers():
    bare = parse_options([])
    assert (bare.model, bare.image_size, bare.max_steps, bare.mixup) == ("b0", BUILTIN_PRESET["image_size"], BUILTIN_PRESET["max_steps"], 0.0)
    epochs = parse_options(["--num-epochs", "2"])  # replaces the preset's --max-steps
    assert epochs.num_epochs == 2 and epochs.max_steps is None
    recipe = parse_options(["--dataset", "some/imagenet", "--model", "b3"])
    assert (recipe.num_epochs, recipe.max_steps, recipe.mixup, recipe.cutmix, recipe.random_erasing) == (300, None, 0.8, 1.0, 0.25)
    assert (recipe.drop_path_rate, recipe.max_grad_norm, recipe.learning_rate_for(1024)) == (0.3, 1.0, 1e-3)
    imagenet = parse_options(["--config", str(EXAMPLES / "imagenet_mit_b0.yaml")])  # the 8-GPU recipe of the docs
    assert (imagenet.num_epochs, imagenet.max_steps, imagenet.learning_rate_for(8 * imagenet.batch_size)) == (300, None, 1e-3)


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_config):
    root = tmp_path_factory.mktemp("bad")
    cases = {
        "one-class": {"train": {"cat": 2}},
        "empty": {"train": {"cat": 2, "dog": 0}},
        "val-extra": {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "owl": 1}},
        "unreadable": {"train": {"cat": 2, "dog": 2}},
    }
    for name, classes in cases.items():
        write_folder(root / name, classes, size=8)
    (root / "unreadable" / "train" / "dog" / "1.png").write_bytes(b"not a png")
    SegFormerForSemanticSegmentation(tiny_config()).save_pretrained(root / "segmentation")
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "{root}/one-class"], "has 1 class (cat); classification needs two"),
        (["--dataset", "{root}/empty"], "class folder dog holds no image"),
        (["--dataset", "{root}/val-extra"], "class owl is not in the training split"),
        (["--dataset", "{root}/unreadable"], "1 image file cannot be read: {root}/unreadable/train/dog/1.png"),
        (["--model", "b9"], "--model 'b9' is no variant (b0, b1, b2, b3, b4, b5"),
        (["--model", "{root}/segmentation"], "is a SegFormerForSemanticSegmentation checkpoint, not an image classifier"),
        (["--mixup", "-1"], "--mixup must not be negative"),
    ],
)
def test_bad_input_is_one_error_line_before_training(bad, tmp_path, capsys, args, message):
    args = [arg.format(root=bad) for arg in args]
    with pytest.raises(SystemExit) as exit:
        main(["pretrain", *args, "--output-dir", str(tmp_path / "out"), "--report-to", "none"])
    error = capsys.readouterr().err
    assert exit.value.code == 2
    assert error.startswith("segformer pretrain: error: ") and error.count("\n") == 1
    assert message.format(root=bad) in error
    assert not (tmp_path / "out" / "model").exists()


def test_a_run_writes_a_classifier_results_curves_and_card(folder, tiny_json, tmp_path, hub_repo_id):
    from huggingface_hub import HfApi

    out = tmp_path / "run"
    main(["pretrain", "--dataset", str(folder), "--model", str(tiny_json), "--output-dir", str(out), "--max-steps", "3",
          "--ema-decay", "0.9", "--checkpointing-steps", "1", "--push-to-hub", hub_repo_id, *RUN])  # fmt: skip
    files = set(HfApi().list_repo_files(hub_repo_id))  # the model folder only, with its card
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= files
    assert not any(name.startswith(("checkpoints", "model_ema", "logs")) for name in files)
    assert SegFormerForImageClassification.from_pretrained(hub_repo_id).config.id2label[2] == "fox"
    model = SegFormerForImageClassification.from_pretrained(out / "model")
    assert model.config.id2label == {0: "cat", 1: "dog", 2: "fox"} and model.config.hidden_sizes == TINY["hidden_sizes"]
    processor = SegFormerImageProcessor.from_pretrained(out / "model")
    assert processor.crop_size == 32 and processor.short_side == round(32 / 0.875)
    results = json.loads((out / "all_results.json").read_text())
    assert 0 <= results["eval_top1"] <= results["eval_top5"] <= 1 and results["eval_samples"] == 4
    assert results["step"] == 3 and "eval_ema_top1" in results
    assert SegFormerForImageClassification.from_pretrained(out / "model_ema").config.num_labels == 3
    assert (out / "training_curves.png").is_file()
    card = (out / "model" / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card and "top1_accuracy" in card and "| mixup | 0.8 |" in card
    # The saved processor's protocol is the evaluation's: its top-1 on the validation images is the run's.
    images = [Image.open(p) for name in ("cat", "dog") for p in sorted((folder / "val" / name).iterdir())]
    with torch.no_grad():
        predicted = model.eval()(**processor(images=images, return_tensors="pt")).logits.argmax(-1)
    assert (predicted == torch.tensor([0, 0, 1, 1])).float().mean().item() == pytest.approx(results["eval_top1"])


def test_resume_from_a_checkpoint_ends_with_the_same_weights(folder, tiny_json, tmp_path):
    # Every random part of the recipe on: Mixup/CutMix, RandAugment, erasing, stochastic depth, EMA.
    args = ["--dataset", str(folder), "--model", str(tiny_json), "--max-steps", "4", "--checkpointing-steps", "2",
            "--drop-path-rate", "0.2", "--randaugment-ops", "2", "--random-erasing", "0.5", "--mixup", "0.8",
            "--cutmix", "1.0", "--ema-decay", "0.5", *RUN]  # fmt: skip
    main(["pretrain", *args, "--output-dir", str(tmp_path / "straight")])
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step_2"
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step_2", checkpoint)
    main(["pretrain", *args, "--output-dir", str(tmp_path / "resumed"), "--resume", "latest"])
    for folder_name in ("model", "model_ema"):
        straight = load_file(tmp_path / "straight" / folder_name / "model.safetensors")
        resumed = load_file(tmp_path / "resumed" / folder_name / "model.safetensors")
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (folder_name, key)


def test_a_datasets_dataset_with_a_class_label_column(tmp_path, tiny_json):
    import datasets

    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["a", "b"])})
    images = [Image.fromarray(np.full((36, 36, 3), 40 * i, np.uint8)) for i in range(6)]
    splits = {name: datasets.Dataset.from_dict({"img": images, "fine_label": [0, 1] * 3}, features=features)
              for name in ("train", "validation")}  # fmt: skip
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "run"
    main(["pretrain", "--dataset", str(tmp_path / "data"), "--model", str(tiny_json), "--output-dir", str(out),
          "--max-steps", "2", *RUN])  # fmt: skip
    assert SegFormerForImageClassification.from_pretrained(out / "model").config.id2label == {0: "a", 1: "b"}
    assert {"eval_top1", "eval_top5"} <= set(json.loads((out / "all_results.json").read_text()))


def test_a_config_json_builds_its_encoder(tiny_json):
    from segformer.pretrain.model import build_model

    options = PretrainOptions(model=str(tiny_json), drop_path_rate=0.2)
    model = build_model(options, {0: "a", 1: "b"}, log=lambda _: None)
    assert isinstance(model, SegFormerForImageClassification)
    assert model.config.depths == TINY["depths"] and model.config.drop_path_rate == 0.2
    assert SegFormerConfig.from_dict(model.config.to_dict()).architectures == ["SegFormerForImageClassification"]


@pytest.mark.slow
def test_the_contract_of_the_bare_command(tmp_path):
    """What `segformer train --model PRETRAINED` and the transfer benchmark rely on: on the built-in set,
    `--model VARIANT --output-dir DIR --max-steps N --seed S` writes DIR/model and eval_top1/eval_top5."""
    out = tmp_path / "bare"
    main(["pretrain", "--model", "b0", "--output-dir", str(out), "--max-steps", "2", "--seed", "1", "--report-to", "none"])
    model = SegFormerForImageClassification.from_pretrained(out / "model")
    assert list(model.config.id2label.values()) == BUILTIN_CLASSES and model.config.hidden_sizes == [32, 64, 160, 256]
    results = json.loads((out / "all_results.json").read_text())
    assert 0 <= results["eval_top1"] <= 1 and 0 <= results["eval_top5"] <= 1 and results["eval_samples"] == 450


def test_weight_average_moves_towards_the_weights_by_one_minus_decay():
    from segformer.pretrain.model import WeightAverage

    model = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(model.weight)
    average = WeightAverage(model, decay=0.9)
    torch.nn.init.ones_(model.weight)
    average.update(model)
    assert torch.allclose(average.model.weight, torch.full((1, 2), 0.1))
    assert average.model is not model and not average.model.weight.requires_grad
    restored = WeightAverage(torch.nn.Linear(2, 1), decay=0.9)
    restored.load_state_dict(average.state_dict())
    assert torch.equal(restored.model.weight, average.model.weight)
