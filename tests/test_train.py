"""Fine-tuning: the default pipeline end to end (tiny), resume after a kill, atomic checkpoints, two
processes under `accelerate launch`, `transformers.Trainer`, options and bad input."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import square, write_masks
from segformer import SegFormerConfig, SegFormerForSemanticSegmentation, data, train
from segformer.errors import InputError, OptionError
from segformer.train.model import build_model, build_optimizer, build_scheduler
from segformer.train.reporting import plot_curves

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_args(model: str, output_dir, *extra) -> list:
    """The built-in run, shrunk: tiny model, 48-pixel crops, few samples and steps."""
    return [
        "--model", model, "--output-dir", str(output_dir), "--crop-size", "48", "48", "--scale", "48", "48",
        "--max-train-samples", "32", "--max-eval-samples", "7", "--batch-size", "4", "--eval-batch-size", "3",
        "--report-to", "none", "--num-overlays", "1", "--learning-rate", "2e-3", "--warmup-steps", "5",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_default_pipeline_end_to_end(tiny_model, tmp_path):
    output = tmp_path / "run"
    args = train.parse_options(tiny_args(tiny_model, output, "--max-steps", "200", "--eval-steps", "100",
                                      "--crop-size", "64", "64", "--scale", "64", "64", "--learning-rate", "3e-3",
                                      "--max-train-samples", "64", "--max-eval-samples", "16", "--batch-size", "8",
                                      "--warmup-steps", "10", "--report-to", "tensorboard"))  # fmt: skip
    results = train.run(args)
    saved = json.loads((output / "all_results.json").read_text())
    assert saved["eval_mean_iou"] == results["eval_mean_iou"] and saved["step"] == 200
    # Predicting the majority class (background) everywhere scores 0.16; a pipeline with misaligned
    # masks, a broken loss or no learning stays there. This run reaches about 0.33.
    assert results["eval_mean_iou"] > 0.25, results
    for name in ("model/config.json", "model/model.safetensors", "model/preprocessor_config.json", "model/README.md",
                 "best/model.safetensors", "training_curves.png", "predictions/prediction_0.png"):  # fmt: skip
        assert (output / name).is_file(), name
    assert any((output / "logs").rglob("events.out.tfevents*")), "no TensorBoard log"
    assert "mean_iou" in (output / "model" / "README.md").read_text()
    # The model folder loads back and scores the same.
    model = SegFormerForSemanticSegmentation.from_pretrained(output / "model")
    assert model.config.id2label == data.BUILTIN_ID2LABEL
    reevaluated = train.run(train.parse_options(tiny_args(str(output / "model"), tmp_path / "eval", "--eval-only",
                                                       "--max-eval-samples", "16")))  # fmt: skip
    assert reevaluated["eval_mean_iou"] == pytest.approx(results["eval_mean_iou"], abs=1e-12)


def launch(args: list, *, processes: int = 1) -> subprocess.Popen:
    command = [sys.executable, "-m", "segformer.train"]
    # One thread per process: the test machine has two cores, shared.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes > 1:
        # torchrun-style processes on the CPU (gloo); without ACCELERATE_USE_CPU they would not join up.
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                   "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", "-m", "segformer.train"]  # fmt: skip
        env["ACCELERATE_USE_CPU"] = "1"
    return subprocess.Popen(command + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_kill_and_resume_ends_with_the_same_weights(tiny_model, tmp_path):
    steps = ["--max-steps", "120", "--checkpointing-steps", "10", "--eval-steps", "1000", "--num-overlays", "0"]
    finish(launch(tiny_args(tiny_model, tmp_path / "straight", *steps)))

    killed = launch(tiny_args(tiny_model, tmp_path / "killed", *steps))
    deadline = time.time() + 200
    while not train.checkpoint_dirs(tmp_path / "killed") and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    reached = int(train.checkpoint_dirs(tmp_path / "killed")[-1].name.split("_")[1])
    assert reached < 120
    (tmp_path / "killed" / "dataset_report.json").unlink()  # the resumed run audits the data again
    output = finish(launch(tiny_args(tiny_model, tmp_path / "killed", *steps, "--resume", "latest")))
    assert f"step_{reached}" in output
    report = json.loads((tmp_path / "killed" / "dataset_report.json").read_text())
    assert report == json.loads((tmp_path / "straight" / "dataset_report.json").read_text())

    straight = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_checkpoint_writes_are_atomic(tiny_model, tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(SegFormerForSemanticSegmentation.from_pretrained(tiny_model))
    state = {"step": 1, "history": {"loss": [], "mean_iou": []}}
    first = train.save_checkpoint(accelerator, tmp_path, state)

    def killed_midway(output_dir, **kwargs):
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt  # the process dies here

    real_save_state, accelerator.save_state = accelerator.save_state, killed_midway
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint(accelerator, tmp_path, {**state, "step": 2})
    accelerator.save_state = real_save_state
    assert train.checkpoint_dirs(tmp_path) == [first]
    assert json.loads((first / train.TRAINER_STATE).read_text())["step"] == 1
    train.load_checkpoint(accelerator, tmp_path, "latest")

    # The next save replaces the partial folder; older checkpoints go beyond the limit.
    for step in (2, 3):
        train.save_checkpoint(accelerator, tmp_path, {**state, "step": step}, limit=2)
    assert [p.name for p in train.checkpoint_dirs(tmp_path)] == ["step_2", "step_3"]
    assert not list((tmp_path / "checkpoints").glob(".partial*"))
    del model


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(tiny_model, tmp_path):
    # 7 validation images, batches of 3: the processes get 4 and 3 images, the last batches uneven.
    output = tmp_path / "ddp"
    log = finish(launch(tiny_args(tiny_model, output, "--max-steps", "4", "--num-overlays", "0"), processes=2))
    assert "x 2 processes" in log
    results = json.loads((output / "all_results.json").read_text())
    # The same final model evaluated in this single process.
    single = train.run(train.parse_options(tiny_args(str(output / "model"), tmp_path / "single", "--eval-only")))
    assert results["eval_samples"] == single["eval_samples"] == 7
    assert results["eval_mean_iou"] == single["eval_mean_iou"]
    assert results["eval_overall_accuracy"] == single["eval_overall_accuracy"]
    # The audit, counted in shards of 16 + 16 training and 4 + 3 validation images, equals one process's.
    assert json.loads((output / "dataset_report.json").read_text()) == one_process_report(
        tiny_args(tiny_model, tmp_path / "one", "--max-steps", "4")
    )


def one_process_report(args: list) -> dict:
    """The dataset report of a run's data, audited in this process."""
    from accelerate import Accelerator

    from segformer.train.datasets import audit_datasets, build_datasets
    from segformer.train.model import build_image_processor

    options = train.parse_options(args)
    train_data, eval_data, id2label = build_datasets(options, build_image_processor(options))
    audits = audit_datasets(train_data, eval_data, Accelerator(cpu=True))
    assert audits["train"].num_images == 32 and audits["validation"].num_images == 7
    report = data.dataset_report(audits, id2label, label_map=train_data.label_map, do_reduce_labels=False)
    return json.loads(json.dumps(report))


@pytest.mark.slow
def test_trainer_trains_with_the_package_metrics(tiny_model, tmp_path):
    from transformers import Trainer, TrainingArguments

    from segformer.metrics import compute_metrics, preprocess_logits_for_metrics

    splits = data.generate_builtin_dataset(num_train=8, num_validation=4, size=48)
    transform = data.TrainTransform(crop_size=(48, 48), scale=(48, 48))
    train_set = data.SegmentationDataset(splits["train"], transform, num_labels=4)
    eval_set = data.SegmentationDataset(splits["validation"], data.EvalTransform(), num_labels=4, split="validation")
    model = SegFormerForSemanticSegmentation.from_pretrained(tiny_model)
    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, per_device_eval_batch_size=2,
        learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=train_set,
        eval_dataset=eval_set,
        compute_metrics=compute_metrics(4, data.BUILTIN_ID2LABEL),
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    output = trainer.train()
    assert trainer.label_names == ["labels"]
    assert torch.isfinite(torch.tensor(output.training_loss))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_mean_iou"] <= 1.0 and "eval_iou_stripes" in metrics
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))


@pytest.mark.parametrize(
    "loss, expected",
    [(dict(), "cross-entropy loss"), (dict(loss_type="focal"), "focal loss"),
     (dict(loss_type="cross_entropy+dice", class_weights=[1.0, 2.0]), "cross-entropy+dice loss (class-weighted)")],
)  # fmt: skip
def test_the_loss_curve_names_the_loss_trained_with(loss, expected, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, path, **kwargs: saved.append(figure))
    history = {"loss": [(1, 0.9), (2, 0.7)], "mean_iou": [(2, 0.3)]}
    plot_curves(history, tmp_path / "curves.png", SegFormerConfig(num_labels=2, **loss))
    assert saved[0].axes[0].get_ylabel() == expected


@pytest.mark.parametrize("dataset", ["missing/", "./missing", "missing/data/set"])
def test_a_missing_dataset_folder_fails_before_anything_is_downloaded(dataset, tmp_path, monkeypatch):
    connections = []

    def refuse(*args, **kwargs):
        connections.append(args)
        raise OSError("this test has no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.chdir(tmp_path)
    options = train.parse_options(["--dataset", dataset, "--output-dir", str(tmp_path / "out")])
    with pytest.raises(InputError, match=f"Dataset '{dataset}': no such folder"):
        train.run(options)
    assert connections == []


def test_config_file_then_command_line_take_precedence(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning-rate: 0.01\nbatch_size: 3\nmax_steps: 7\n")
    args = train.parse_options(["--config", str(config), "--max-steps", "9"])
    assert (args.learning_rate, args.batch_size, args.max_steps) == (0.01, 3, 9)
    assert args.model == train.BUILTIN_PRESET["model"]  # the built-in preset fills the rest
    paper = train.parse_options(["--dataset", "some/dataset"])
    assert (paper.learning_rate, paper.weight_decay, paper.head_lr_scale) == (6e-5, 0.01, 10.0)
    config.write_text("learning_rat: 0.01\n")
    with pytest.raises(ValueError, match="unknown options.*learning_rat"):
        train.parse_options(["--config", str(config)])


@pytest.mark.slow
def test_resuming_past_max_steps_says_nothing_is_left_to_train(tiny_model, tmp_path):
    short = ["--max-train-samples", "8", "--max-eval-samples", "2", "--num-overlays", "0", "--num-workers", "0"]
    train.run(train.parse_options(tiny_args(tiny_model, tmp_path, *short, "--max-steps", "3", "--checkpointing-steps", "2")))
    assert [path.name for path in train.checkpoint_dirs(tmp_path)] == ["step_2"]
    for max_steps in ("2", "1"):  # the checkpoint's step, and below it
        resumed = train.parse_options(tiny_args(tiny_model, tmp_path, *short, "--max-steps", max_steps, "--resume", "latest"))
        with pytest.raises(OptionError, match=f"checkpoint is at step 2 and this run ends at step {max_steps}"):
            train.run(resumed)


def test_bad_mask_stops_the_run_before_training_and_names_the_file(tiny_model, tmp_path):
    from PIL import Image

    for split in ("train", "validation"):
        for folder in ("images", "labels"):
            (tmp_path / "set" / split / folder).mkdir(parents=True)
        for stem in ("a", "b"):
            Image.new("RGB", (48, 48)).save(tmp_path / "set" / split / "images" / f"{stem}.png")
            Image.new("L", (48, 48), 7 if (split, stem) == ("train", "b") else 1).save(
                tmp_path / "set" / split / "labels" / f"{stem}.png"
            )
    args = tiny_args(tiny_model, tmp_path / "out", "--dataset", str(tmp_path / "set"), "--id2label", "a,b,c,d")
    with pytest.raises(ValueError, match=r"train\[1\] \(.*b\.png\).*class ids \[7\]"):
        train.run(train.parse_options(args))
    assert not (tmp_path / "out" / "model").exists()


def test_new_head_when_the_number_of_labels_differs(tiny_model, capsys):
    args = train.parse_options(["--model", tiny_model, "--id2label", "a,b,c,d,e,f"])
    model = build_model(args, data.read_id2label(args.id2label))
    assert model.decode_head.linear_pred.out_channels == 6
    assert "newly initialised decode head for 6 labels" in capsys.readouterr().out


@pytest.mark.slow
def test_push_to_hub_uploads_the_model_folder_only(tiny_model, tmp_path, hub_repo_id):
    from huggingface_hub import HfApi

    args = tiny_args(
        tiny_model, tmp_path, "--max-steps", "2", "--checkpointing-steps", "1", "--push-to-hub", hub_repo_id
    )
    train.run(train.parse_options(args))
    files = set(HfApi().list_repo_files(hub_repo_id))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= files
    assert not any(name.startswith(("checkpoints", "best", "logs")) for name in files)
    model = SegFormerForSemanticSegmentation.from_pretrained(hub_repo_id)
    assert model.config.id2label == data.BUILTIN_ID2LABEL


def test_optimizer_groups_and_schedule_follow_the_paper(tiny_model):
    args = train.parse_options(["--dataset", "any/dataset", "--warmup-steps", "4"])
    model = SegFormerForSemanticSegmentation.from_pretrained(tiny_model)
    optimizer = build_optimizer(model, args)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, parameter in model.named_parameters():
        group = group_of[id(parameter)]
        head = name.startswith("decode_head.")
        assert group["lr"] == pytest.approx(6e-5 * (10 if head else 1)), name
        assert group["weight_decay"] == (0.01 if parameter.ndim > 1 else 0.0), name
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    scheduler = build_scheduler(optimizer, args, max_steps=10, num_processes=1)
    factors = []
    for _ in range(10):
        factors.append(optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"])
        optimizer.step()
        scheduler.step()
    factors.append(optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"])
    # Linear warmup over 4 steps, then linear (power 1) decay to 0 at step 10.
    assert factors == pytest.approx([0, 0.25, 0.5, 0.75, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0])


@pytest.mark.slow
def test_binary_masks_stop_the_run_and_train_with_a_label_map(tiny_model, tmp_path, capsys, monkeypatch):
    from segformer.cli import main

    # The most common way binary masks are stored: 0 background, 255 object.
    write_masks(tmp_path / "bin", {"train": [square(255, corner=c) for c in (2, 8, 14, 20)],
                                   "validation": [square(255, corner=c) for c in (5, 17)]})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    args = tiny_args(tiny_model, tmp_path / "out", "--dataset", "bin", "--id2label", "background,object",
                     "--max-steps", "2", "--max-eval-samples", "2", "--num-workers", "0")  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main(["train", *args])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exited.value.code == 2 and len(errors) == 1
    assert "look like 0/255 binary masks" in errors[0] and "--label-map 255:1" in errors[0], errors
    report = json.loads((tmp_path / "out" / "dataset_report.json").read_text())  # left to look at
    assert report["splits"]["train"]["stored_values"] == [0, 255] and report["splits"]["train"]["pixel_counts"][1] == 0
    assert not (tmp_path / "out" / "model").exists()

    results = train.run(train.parse_options([*args, "--label-map", "255:1", "--class-weights", "auto"]))
    report = json.loads((tmp_path / "out" / "dataset_report.json").read_text())
    # --class-weights auto: median-frequency balancing of the training audit, in the saved config.
    frequencies = np.array([1904, 400]) / 2304
    expected = (np.median(frequencies) / frequencies).tolist()
    assert report["class_weights_median_frequency"] == pytest.approx(expected)
    config = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert config["class_weights"] == pytest.approx(expected)
    train_audit, validation_audit = report["splits"]["train"], report["splits"]["validation"]
    assert train_audit["stored_values"] == [0, 255] and train_audit["values"] == [0, 1]
    assert train_audit["pixel_counts"] == [4 * (48 * 48 - 400), 4 * 400] and train_audit["image_counts"] == [4, 4]
    assert validation_audit["pixel_counts"] == [2 * (48 * 48 - 400), 2 * 400] and report["label_map"] == {"255": 1}
    assert results["eval_absent_classes"] == [] and results["eval_mean_iou_classes"] == 2
    assert (tmp_path / "out" / "dataset_report.png").is_file() and (tmp_path / "out" / "model").is_dir()
    printed = capsys.readouterr().out
    assert "Dataset audit" in printed and "object" in printed and "over 2 of 2 classes" in printed


@pytest.mark.slow
def test_missing_and_absent_classes_and_mostly_ignored_masks(tiny_model, tmp_path, capsys):
    # Class c is in no mask; the training masks are mostly 255 (ignored): 48*48 - 2*400 of 2304 pixels.
    train_masks = [square(1, background=255, corner=c) for c in (2, 4, 6, 8)]
    for mask in train_masks:
        mask[30:, 30:] = 0
    write_masks(tmp_path / "set", {"train": train_masks, "validation": [square(1, corner=c) for c in (5, 17)]})
    args = tiny_args(tiny_model, tmp_path / "out", "--dataset", str(tmp_path / "set"), "--id2label", "a,b,c",
                     "--max-steps", "2", "--max-eval-samples", "2", "--num-workers", "0")  # fmt: skip
    with pytest.raises(ValueError, match=r"Class c \(id 2\) has no pixel in the training split.*--allow-missing-classes"):
        train.run(train.parse_options(args))
    capsys.readouterr()

    results = train.run(train.parse_options([*args, "--allow-missing-classes"]))
    printed = capsys.readouterr().out
    ignored = (48 * 48 - 400 - 18 * 18) / (48 * 48)
    assert f"Warning: {ignored:.0%} of the train split's mask pixels are the ignore index 255" in printed
    assert "training anyway (--allow-missing-classes)" in printed
    assert results["eval_absent_classes"] == ["c"]
    saved = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert saved["eval_absent_classes"] == ["c"]
    with_iou = [name for name in "abc" if not math.isnan(saved[f"eval_iou_{name}"])]
    assert saved["eval_mean_iou_classes"] == len(with_iou)
    assert f"over {len(with_iou)} of 3 classes (absent from validation: c" in printed
