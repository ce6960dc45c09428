"""`segformer evaluate`: the metrics against references written here from their formulas, the bare command
equal to `segformer train`'s numbers, the reports, model-index results on the Hub, one-label models with
their threshold, bad input, and two processes equal to one."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from conftest import square, write_masks
from segformer import SegFormerForSemanticSegmentation, SegFormerImageProcessor, train
from segformer.cli import main
from segformer.evaluation import metrics as formulas
from segformer.evaluation.engine import THRESHOLDS
from segformer.inference import InferenceSettings, segment_probabilities
from segformer.metrics import confusion_matrix

pytestmark = pytest.mark.usefixtures("one_thread")

IGNORE = 255


# --- metrics -----------------------------------------------------------------------------------------


def reference(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """The metrics from their definitions, counted on the pixels themselves (not on a confusion matrix)."""
    valid = labels != IGNORE
    tp, truth, predicted = (np.zeros(num_classes) for _ in range(3))
    for c in range(num_classes):
        tp[c] = ((predictions == c) & (labels == c) & valid).sum()
        truth[c] = ((labels == c) & valid).sum()
        predicted[c] = ((predictions == c) & valid).sum()

    def ratio(a, b):
        return [a[c] / b[c] if b[c] else math.nan for c in range(num_classes)]

    iou = ratio(tp, truth + predicted - tp)
    recall = ratio(tp, truth)
    precision = ratio(tp, predicted)
    dice = ratio(2 * tp, truth + predicted)
    fscore = [2 * p * r / (p + r) if not (math.isnan(p) or math.isnan(r)) and p + r else math.nan
              for p, r in zip(precision, recall)]  # fmt: skip

    def mean(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept)

    fw = sum(truth[c] / truth.sum() * iou[c] for c in range(num_classes) if truth[c])
    return {"aAcc": tp.sum() / truth.sum(), "mIoU": mean(iou), "mAcc": mean(recall), "mDice": mean(dice),
            "mFscore": mean(fscore), "mPrecision": mean(precision), "mRecall": mean(recall), "fwIoU": fw,
            "iou": iou, "dice": dice, "precision": precision, "recall": recall}  # fmt: skip


def same(a, b) -> bool:
    return (a is None and math.isnan(b)) or (a is not None and abs(a - b) < 1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_their_definitions_with_absent_classes_and_ignored_pixels(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (3, 19, 23))  # classes 4 and 5 never in the truth
    labels[rng.uniform(size=labels.shape) < 0.15] = IGNORE
    predictions = rng.integers(0, 5, labels.shape)  # 4 predicted though absent; 5 nowhere
    predictions[predictions == 3] = 0  # class 3 is in the truth but never predicted: no precision
    confusion = confusion_matrix(torch.from_numpy(predictions), torch.from_numpy(labels), 6).numpy()
    expected = reference(predictions, labels, 6)
    summary = formulas.summary(confusion)
    for name in formulas.SUMMARY:
        assert abs(summary[name] - expected[name]) < 1e-9, name
    assert summary["mIoU_classes"] == 5  # class 5: absent and not predicted, no IoU
    rows = formulas.class_table(confusion, {})
    for name in ("iou", "dice", "precision", "recall"):
        assert all(same(row[name], value) for row, value in zip(rows, expected[name])), name
    assert rows[4]["iou"] == 0 and rows[4]["truth_pixels"] == 0 and rows[4]["predicted_pixels"] > 0
    assert rows[3]["precision"] is None and rows[5]["iou"] is None
    # The training run's short set is computed by the same formulas.
    from segformer.metrics import metrics_from_confusion

    assert metrics_from_confusion(torch.from_numpy(confusion))["mean_iou"] == summary["mIoU"]


def test_perfect_prediction_scores_one_and_binary_numbers():
    labels = np.array([[0, 0, 1, 1, IGNORE]])
    confusion = confusion_matrix(torch.from_numpy(labels.clip(0, 1)), torch.from_numpy(labels), 3).numpy()
    assert all(formulas.summary(confusion)[name] == 1.0 for name in formulas.SUMMARY)
    confusion = np.array([[5, 1], [2, 2]])  # background row, foreground row
    assert formulas.binary(confusion) == pytest.approx(
        {"foreground_iou": 2 / 5, "foreground_dice": 4 / 7, "foreground_precision": 2 / 3, "foreground_recall": 2 / 4}
    )


def test_trainer_metrics_of_a_one_label_model_are_over_background_and_foreground():
    from transformers import EvalPrediction

    from segformer.metrics import compute_metrics

    logits = torch.tensor([[[[2.0, -1.0], [-3.0, 0.5]]]])  # (1, 1, 2, 2): foreground at 0 and 3
    labels = torch.tensor([[[1, 1], [0, IGNORE]]])
    metrics = compute_metrics(1, {0: "crack"})(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
    # crack: 1 hit, 1 missed; background: 1 hit, and the missed crack pixel predicted as it.
    assert metrics["iou_crack"] == 0.5 and metrics["iou_background"] == 0.5 and metrics["mean_iou"] == 0.5


def test_best_threshold_equals_a_search_over_the_pixels():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=5000) < 0.3
    probability = np.clip(np.where(truth, rng.normal(0.62, 0.2, truth.size), rng.normal(0.35, 0.2, truth.size)), 0, 1)
    bins = np.searchsorted(THRESHOLDS, probability, side="left")  # torch.bucketize's convention
    foreground = np.bincount(bins[truth], minlength=len(THRESHOLDS) + 1)
    background = np.bincount(bins[~truth], minlength=len(THRESHOLDS) + 1)
    threshold, iou = formulas.best_threshold(foreground, background, THRESHOLDS)
    brute = [((probability > t) & truth).sum() / ((probability > t) | truth).sum() for t in THRESHOLDS]
    assert iou == pytest.approx(max(brute), abs=1e-12) and threshold == THRESHOLDS[int(np.argmax(brute))]


# --- end to end --------------------------------------------------------------------------------------


QUICK = ["--crop-size", "48", "48", "--scale", "48", "48", "--max-train-samples", "16", "--batch-size", "4",
         "--eval-batch-size", "1", "--max-steps", "3", "--report-to", "none", "--num-overlays", "2",
         "--learning-rate", "2e-3", "--warmup-steps", "1", "--num-workers", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def builtin_run(tiny_model, tmp_path_factory) -> Path:
    """A quick built-in training run, left where `segformer train` with no flags leaves it."""
    root = tmp_path_factory.mktemp("workdir")
    train.run(train.parse_options(["--model", tiny_model, "--output-dir", str(root / "outputs" / "train"), *QUICK]))
    return root


def run_cli(argv: list, capsys) -> tuple:
    """(exit status, stdout, error lines) of `segformer ARGV` run in this process."""
    try:
        main(argv)
        code = 0
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if "error:" in line]


@pytest.mark.slow
def test_bare_evaluate_reports_the_mean_iou_that_training_reported(builtin_run, monkeypatch, capsys):
    monkeypatch.chdir(builtin_run)
    trained = json.loads(Path("outputs/train/all_results.json").read_text())
    code, printed, errors = run_cli(["evaluate"], capsys)
    assert code == 0 and not errors, errors
    results = json.loads(Path("outputs/evaluate/eval_results.json").read_text())
    assert results["model"] == "outputs/train/model" and results["num_images"] == 48 == trained["eval_samples"]
    assert results["metrics"]["mIoU"] == trained["eval_mean_iou"]
    assert results["metrics"]["aAcc"] == trained["eval_overall_accuracy"]
    assert f"mIoU {trained['eval_mean_iou']:.4f}" in printed
    # Training's final evaluation wrote the same report, numbers and all.
    during = json.loads(Path("outputs/train/evaluation/eval_results.json").read_text())
    assert during["confusion_matrix"] == results["confusion_matrix"] and during["metrics"] == results["metrics"]
    for name in ("eval_report.md", "confusion_matrix.png", "class_iou.png", "worst_images.png"):
        assert Path("outputs/evaluate", name).is_file() and Path("outputs/train/evaluation", name).is_file(), name
    report = Path("outputs/evaluate/eval_report.md").read_text()
    assert "| fwIoU |" in report and "stripes" in report and "![Worst images](worst_images.png)" in report
    # The per-image mIoU of the gallery: every image once.
    assert sorted(index for index, _ in results["image_miou"]) == list(range(48))
    # The trained model's card holds the results as model-index metadata.
    card = ModelCard.load("outputs/train/model/README.md")
    parsed = {result.metric_name: result for result in card.data.eval_results}
    assert parsed["mIoU"].metric_value == round(trained["eval_mean_iou"], 4)
    assert parsed["mIoU"].task_type == "semantic-segmentation" and parsed["fwIoU"].dataset_split == "validation"
    # --push-to-hub into a local folder's card: results of the same dataset, split and protocol are replaced,
    # others added; a subset is named as one.
    weights = Path("outputs/train/model/model.safetensors").read_bytes()
    for subset in ([], ["--max-samples", "3"]):
        argv = ["evaluate", *subset, "--worst-images", "0", "--output-dir", "again",
                "--push-to-hub", "outputs/train/model"]  # fmt: skip
        code, _, errors = run_cli(argv, capsys)
        assert code == 0 and not errors, errors
    three = json.loads(Path("again/eval_results.json").read_text())
    card = ModelCard.load("outputs/train/model/README.md")
    mious = {r.dataset_split: r.metric_value for r in card.data.eval_results if r.metric_name == "mIoU"}
    assert three["split"] == "validation[:3]" and card.data.eval_results[0].metric_name == "mIoU"
    assert mious == {
        "validation": round(trained["eval_mean_iou"], 4),
        "validation[:3]": round(three["metrics"]["mIoU"], 4),
    }
    assert Path("outputs/train/model/model.safetensors").read_bytes() == weights


@pytest.mark.slow
def test_push_to_hub_puts_the_results_in_the_card_and_leaves_the_weights(builtin_run, hub_repo_id, capsys):
    from segformer.hub import push_to_hub

    model = builtin_run / "outputs" / "train" / "model"
    push_to_hub(model, hub_repo_id)
    api = HfApi()
    weights_before = api.model_info(hub_repo_id, files_metadata=True).siblings
    code, _, errors = run_cli(["evaluate", hub_repo_id, "--max-samples", "5", "--worst-images", "0",
                               "--output-dir", str(builtin_run / "hub-eval"), "--push-to-hub", hub_repo_id], capsys)  # fmt: skip
    assert code == 0 and not errors, errors
    results = json.loads((builtin_run / "hub-eval" / "eval_results.json").read_text())
    card = ModelCard.load(hub_repo_id)
    mine = [r for r in card.data.eval_results if r.dataset_split == "validation[:5]" and r.metric_name == "mIoU"]
    assert [r.metric_value for r in mine] == [round(results["metrics"]["mIoU"], 4)]
    assert mine[0].metric_config == results["protocol"]["description"]
    after = {s.rfilename: s.blob_id for s in api.model_info(hub_repo_id, files_metadata=True).siblings}
    before = {s.rfilename: s.blob_id for s in weights_before}
    assert {k: v for k, v in after.items() if k != "README.md"} == {k: v for k, v in before.items() if k != "README.md"}
    assert after["README.md"] != before["README.md"]


@pytest.mark.slow
def test_one_label_model_trains_on_0_255_masks_and_finds_its_threshold(tiny_model, tmp_path, capsys):
    write_masks(tmp_path / "bin", {"train": [square(255, c) for c in (2, 8, 14, 20, 5, 11, 17, 23)],
                                   "validation": [square(255, c) for c in (4, 16, 26)]}, bright_objects=True)  # fmt: skip
    output = tmp_path / "out"
    results = train.run(train.parse_options(["--model", tiny_model, "--dataset", str(tmp_path / "bin"), "--id2label",
                                             "object", "--label-map", "255:1", "--output-dir", str(output), *QUICK,
                                             "--max-steps", "4", "--eval-short-side", "0"]))  # fmt: skip
    config = json.loads((output / "model" / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert results["eval_mean_iou_classes"] == 2  # over background and object
    during = json.loads((output / "evaluation" / "eval_results.json").read_text())
    assert during["binary"]["threshold"] == 0.5 and during["binary"]["foreground_iou"] is not None
    assert [c["name"] for c in during["classes"]] == ["background", "object"]

    model = str(output / "model")
    argv = ["evaluate", model, "--dataset", str(tmp_path / "bin"), "--label-map", "255:1", "--output-dir",
            str(tmp_path / "eval"), "--threshold", "auto", "--save-threshold"]  # fmt: skip
    code, printed, errors = run_cli(argv, capsys)
    assert code == 0 and not errors, errors
    found = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    threshold = found["binary"]["threshold"]
    # Four steps leave the model unsure: a lower threshold than 0.5 finds more of the object. The histogram's
    # IoU at the threshold it picks is the IoU of the evaluation at that threshold.
    assert threshold != 0.5 and found["binary"]["foreground_iou"] > during["binary"]["foreground_iou"]
    searched = float(re.search(r"\(foreground IoU ([0-9.]+)\)", printed).group(1))
    assert searched == pytest.approx(found["binary"]["foreground_iou"], abs=1e-3) and "foreground iou" in printed
    # Saved where every consumer reads it: the config (predict, the app) and the processor (pipeline()).
    loaded = SegFormerForSemanticSegmentation.from_pretrained(model).eval()
    processor = SegFormerImageProcessor.from_pretrained(model)
    assert loaded.config.threshold == threshold == processor.threshold
    # predict's path (segment_images) and pipeline()'s (the processor's post-processing) both threshold at it.
    from PIL import Image

    from segformer.inference import segment_images

    image = Image.open(tmp_path / "bin" / "validation" / "images" / "0.png")
    label_map = segment_images(loaded, processor, [image])[0]
    settings = InferenceSettings.from_processor(processor)
    probability = segment_probabilities(loaded, processor.pixel_values(image, do_resize=False)[None], settings)[0, 1]
    differ = label_map != (probability > threshold).long().numpy()  # only within float rounding of t
    assert (probability.numpy()[differ] - threshold).__abs__().max(initial=0) < 1e-6
    with torch.no_grad():
        outputs = loaded(**processor(images=image, return_tensors="pt"))
    post = processor.post_process_semantic_segmentation(outputs, target_sizes=[(48, 48)])[0]
    assert np.array_equal(post.numpy(), label_map)


@pytest.mark.slow
def test_two_processes_sum_to_the_confusion_matrix_of_one(builtin_run, tmp_path):
    model = str(builtin_run / "outputs" / "train" / "model")
    args = [model, "--max-samples", "7", "--batch-size", "2", "--worst-images", "2"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "segformer.cli",
               "evaluate", *args, "--output-dir", str(tmp_path / "two")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert main(["evaluate", *args, "--output-dir", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "eval_results.json").read_text())
    one = json.loads((tmp_path / "one" / "eval_results.json").read_text())
    assert two["confusion_matrix"] == one["confusion_matrix"] and two["metrics"] == one["metrics"]
    assert two["image_miou"] == one["image_miou"] and len(one["image_miou"]) == 7


# --- bad input -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(tiny_model, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad")
    write_masks(root / "binary", {"validation": [square(255, 4), square(255, 10)]}, bright_objects=True)
    write_masks(root / "beyond", {"validation": [square(7, 4)]}, bright_objects=True)
    (root / "empty" / "validation" / "images").mkdir(parents=True)
    (root / "empty" / "validation" / "labels").mkdir(parents=True)
    no_processor = root / "no-processor"
    SegFormerForSemanticSegmentation.from_pretrained(tiny_model).save_pretrained(no_processor)
    (no_processor / "preprocessor_config.json").unlink()  # as a folder saved by other code may be
    with_processor = root / "model"
    SegFormerForSemanticSegmentation.from_pretrained(tiny_model).save_pretrained(with_processor)
    SegFormerImageProcessor(short_side=None).save_pretrained(with_processor)
    return {"root": root, "model": str(with_processor), "no_processor": str(no_processor)}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{model}", "--dataset", "{root}/binary"], "--label-map 255:1"),
        (["{model}", "--dataset", "{root}/beyond"], "class ids [7]"),
        (["{model}", "--dataset", "{root}/empty"], "hold no images"),
        (["{model}", "--id2label", "a,b,c"], "has 3 classes but the model has 4 labels"),
        (["{no_processor}"], "no preprocessor_config.json"),
        (["{model}", "--threshold", "auto"], "--threshold is for one-label"),
        (["{model}", "--threshold", "1.5"], "--threshold takes a probability"),
        (["{model}", "--split", "test"], "no split 'test'"),
        ([], "run `segformer train` first, or name a model"),
    ],
)
def test_bad_input_is_one_error_line_and_status_2(bad_inputs, argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no outputs/train here
    argv = [part.format(**bad_inputs) for part in argv]
    code, _, errors = run_cli(["evaluate", *argv, "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "out" / "eval_results.json").exists()


def test_a_converted_models_source_protocol_scores_the_label_maps_predict_writes(bad_inputs, tmp_path, capsys):
    """A processor with mmseg's resize (a converted model's) resizes the image as stored: evaluate runs
    it through the same path as `segformer predict`, not on the normalised tensors."""
    from PIL import Image

    from segformer.inference import segment_images

    model_dir = tmp_path / "converted"
    model = SegFormerForSemanticSegmentation.from_pretrained(bad_inputs["model"]).eval()
    model.save_pretrained(model_dir)
    processor = SegFormerImageProcessor(short_side=40, resize_protocol="mmseg")
    processor.save_pretrained(model_dir)
    masks = [np.random.default_rng(seed).integers(0, 4, (48, 56)).astype(np.uint8) for seed in range(3)]
    for folder in ("images", "labels"):
        (tmp_path / "data" / "validation" / folder).mkdir(parents=True)
    expected = np.zeros((4, 4), np.int64)
    for index, mask in enumerate(masks):
        image = Image.fromarray(np.random.default_rng(index + 10).integers(0, 256, (48, 56, 3), dtype=np.uint8))
        image.save(tmp_path / "data" / "validation" / "images" / f"{index}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "validation" / "labels" / f"{index}.png")
        prediction = segment_images(model, processor, [image])[0]
        expected += confusion_matrix(torch.from_numpy(prediction), torch.from_numpy(mask.astype(np.int64)), 4).numpy()
    argv = ["evaluate", str(model_dir), "--dataset", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")]
    code, _, errors = run_cli([*argv, "--worst-images", "1"], capsys)
    assert code == 0 and not errors, errors
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["confusion_matrix"] == expected.tolist()
