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

TINY = dict(hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)
SIDE = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
