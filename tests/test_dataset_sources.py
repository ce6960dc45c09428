"""Datasets as `datasets` gives them, end to end through `segformer train`: a Hub id (on the local test Hub,
tests/conftest_hub.py), a stream of local Parquet files with the audit on a stated number of samples, the
stream's split across processes and its resume; and an official layout's protocol and colours written into
the saved model."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi
from PIL import Image
from safetensors.torch import load_file

from segformer import SegFormerConfig, SegFormerForSemanticSegmentation, data, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)
SIDE = 32


@pytest.fixture(autouse=True)
def no_shutdown_pause(monkeypatch):
    """`datasets` pauses 5 s whenever a stream that interleaves Parquet shards stops (an Arrow thread-shutdown
    workaround): once an epoch in a real run, but most of the time of these tiny ones."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def tiny_model(folder, num_labels: int) -> str:
    torch.manual_seed(0)
    labels = {i: f"class{i}" for i in range(num_labels)}
    config = SegFormerConfig(**TINY, id2label=labels, label2id={v: k for k, v in labels.items()})
    SegFormerForSemanticSegmentation(config).save_pretrained(folder)
    return str(folder)


def pairs(count: int, seed: int = 0):
    """A `datasets.Dataset` as the Hub's segmentation datasets hold them: `pixel_values` and `label` images."""
    import datasets

    rng = np.random.default_rng(seed)
    masks = [np.kron(rng.integers(0, 3, (4, 4)), np.ones((SIDE // 4, SIDE // 4))).astype(np.uint8) for _ in range(count)]
    images = [Image.fromarray((np.stack([m * 90] * 3, -1) + rng.integers(0, 30, (SIDE, SIDE, 3))).astype(np.uint8)) for m in masks]
    features = datasets.Features({"pixel_values": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict({"pixel_values": images, "label": [Image.fromarray(m) for m in masks]}, features=features)


def snapshot(folder, train_count=12, eval_count=3):
    """A Hub snapshot's files: data/SPLIT-00000-of-00001.parquet and id2label.json."""
    (folder / "data").mkdir(parents=True)
    pairs(train_count).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    pairs(eval_count, seed=1).to_parquet(str(folder / "data" / "validation-00000-of-00001.parquet"))
    (folder / "id2label.json").write_text(json.dumps({"0": "ground", "1": "wall", "2": "sky"}))
    return folder


def args(model, output, *extra) -> list:
    return ["--model", model, "--output-dir", str(output), "--crop-size", "32", "32", "--scale", str(SIDE), str(SIDE),
            "--batch-size", "2", "--report-to", "none", "--num-overlays", "0", "--warmup-steps", "1",
            "--eval-short-side", "0", "--num-workers", "0", *extra]  # fmt: skip


def test_hub_dataset_id_with_pixel_values_columns_trains(hub_server, hub_repo_id, tmp_path, capsys):
    folder = snapshot(tmp_path / "snapshot", train_count=4, eval_count=2)
    api = HfApi()
    api.create_repo(hub_repo_id, repo_type="dataset")
    api.upload_folder(repo_id=hub_repo_id, folder_path=str(folder), repo_type="dataset")
    model = tiny_model(tmp_path / "tiny", 3)
    results = train.run(train.parse_options(args(model, tmp_path / "out", "--dataset", hub_repo_id, "--max-steps", "1")))
    out = capsys.readouterr().out
    assert f"Dataset {hub_repo_id} (hub)" in out and "images 'pixel_values', masks 'label'" in out
    assert results["eval_samples"] == 2
    config = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "ground", "1": "wall", "2": "sky"}  # the repo's id2label.json


def test_stream_is_split_across_processes_without_overlap(tmp_path):
    folder = snapshot(tmp_path / "snapshot", train_count=12)
    stream = data.open_dataset(str(folder), streaming=True).split("train")
    common = dict(num_labels=3, image_column="pixel_values", label_column="label", buffer_size=4)

    def epoch(number):
        parts = []
        for rank in (0, 1):
            part = data.StreamingSegmentation(stream, data.EvalTransform(), rank=rank, world_size=2, **common)
            part.set_epoch(number)
            parts.append([sample["labels"].numpy().tobytes() + sample["pixel_values"].numpy().tobytes() for sample in part])
        return parts

    first, second = epoch(0), epoch(1)
    for parts in (first, second):  # each epoch: the processes' parts are disjoint and cover the stream
        assert len(parts[0]) + len(parts[1]) == 12 and not set(parts[0]) & set(parts[1])
    assert sorted(first[0] + first[1]) == sorted(second[0] + second[1]) and first != second  # reshuffled


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_run_resumes_where_it_stopped(tmp_path, capsys, workers):
    """Resumed from its step-3 checkpoint, a streamed run ends with the weights of the run that went through:
    8 steps of 2 samples over 12 samples cross an epoch boundary; with 2 workers each resumes at its own
    position."""
    folder = snapshot(tmp_path / "snapshot")
    model = tiny_model(tmp_path / "tiny", 3)
    stream = ["--dataset", str(folder), "--streaming", "--shuffle-buffer", "4", "--audit-samples", "5",
              "--num-workers", str(workers), "--eval-steps", "100", "--checkpointing-steps", "3"]  # fmt: skip
    train.run(train.parse_options(args(model, tmp_path / "whole", *stream, "--max-steps", "8")))
    out = capsys.readouterr().out
    assert "audited on its first 5 training samples" in out and "a stream" in out
    report = json.loads((tmp_path / "whole" / "dataset_report.json").read_text())
    assert report["splits"]["train"]["num_images"] == 5
    train.run(train.parse_options(args(model, tmp_path / "part", *stream, "--max-steps", "8", "--resume",
                                       str(tmp_path / "whole" / "checkpoints" / "step_3"))))  # fmt: skip
    saved = json.loads((tmp_path / "whole" / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    position = saved["stream"]["ranks"]["0"]
    assert sum(position["positions"].values()) == 6 and position["epoch"] == 0 and saved["stream"]["workers"] == workers
    if workers == 0:  # positions are per worker: another worker count cannot resume them
        with pytest.raises(ValueError, match="same .*--num-workers 0"):
            train.run(train.parse_options(args(model, tmp_path / "other", *stream, "--max-steps", "8", "--num-workers", "1",
                                               "--resume", str(tmp_path / "whole" / "checkpoints" / "step_3"))))  # fmt: skip
    whole = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "part" / "model" / "model.safetensors")
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)


def test_cityscapes_layout_writes_its_protocol_colours_and_train_ids_into_the_model(tmp_path, capsys):
    from tests.test_dataset_layouts import cityscapes_tree

    root = cityscapes_tree(tmp_path / "cityscapes", suffixes=("labelIds",))
    options = train.parse_options(["--dataset", str(root)])
    assert (options.crop_size, options.eval_mode, options.slide_stride, options.eval_short_side) == ([1024, 1024], "slide", 768, 1024)
    model = tiny_model(tmp_path / "tiny", 19)
    small = ["--dataset", str(root), "--max-steps", "1", "--allow-missing-classes", "--slide-stride", "8",
             "--crop-size", "32", "32", "--scale", "64", "32"]  # fmt: skip
    train.run(train.parse_options(args(model, tmp_path / "out", *small)))
    out = capsys.readouterr().out
    assert "cityscapes layout" in out and "labelIds masks through the official id -> train-id table" in out
    saved = tmp_path / "out" / "model"
    processor = json.loads((saved / "preprocessor_config.json").read_text())
    assert (processor["window"], processor["stride"]) == (32, 8)
    config = json.loads((saved / "config.json").read_text())
    assert config["id2label"]["13"] == "car" and config["palette"][0] == [128, 64, 128]
    report = json.loads((tmp_path / "out" / "dataset_report.json").read_text())
    assert report["splits"]["train"]["values"] == [0, 13, 18, 255]  # road, car, bicycle; the rest ignored


@pytest.mark.parametrize("extra, option", [(["--num-epochs", "2"], "--num-epochs"), (["--eval-steps", "epoch"], "--eval-steps"),
                                           (["--image-stats", "auto"], "--image-stats")])  # fmt: skip
def test_streaming_refuses_what_needs_the_whole_dataset(extra, option):
    with pytest.raises(ValueError, match=f"{option} does not apply to a stream"):
        train.parse_options(["--dataset", "owner/name", "--streaming", *extra])
