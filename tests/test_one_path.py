"""One answer for one image. After a built-in training run, the label maps of every validation image are
pixel-identical from the three entry points: the training evaluation, `segformer predict` on the saved
folder, and `pipeline("image-segmentation", trust_remote_code=True)` in a process without this package
(transformers 5.x here, and 4.46); and the mIoU computed from the pipeline's maps is the one training
reported. transformers 4.x's `pipeline()` loads image processors of built-in model types only, so there
the processor is named too (`image_processor=folder`), as the model card says."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from segformer import SegFormerConfig, SegFormerForSemanticSegmentation, data, train
from segformer.cli import main as cli
from segformer.metrics import confusion_matrix, metrics_from_confusion
from segformer.train.evaluation import evaluation_settings, label_maps
from segformer.train.model import build_image_processor

pytestmark = pytest.mark.slow

# Runs in a fresh interpreter that cannot import `segformer`: the pipeline on argv[2:-1], label maps
# (rebuilt from its per-class masks) saved to argv[-1].
PIPELINE_RUN = """
import sys
sys.modules["segformer"] = None
import numpy as np, torch, transformers
from PIL import Image
from transformers import pipeline

torch.set_num_threads(1)
folder, paths, output = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
processor = {"image_processor": folder} if transformers.__version__.startswith("4.") else {}
segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True, **processor)
label2id = {name: int(i) for i, name in segmenter.model.config.id2label.items()}
maps = {}
for index, path in enumerate(paths):
    image = Image.open(path)
    label_map = np.full((image.height, image.width), -1, np.int64)
    for segment in segmenter(image):
        label_map[np.asarray(segment["mask"]) == 255] = label2id[segment["label"]]
    maps[str(index)] = label_map
np.savez(output, **maps)
print(transformers.__version__, type(segmenter.image_processor).__module__)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A shortened built-in training run (tiny model, 150 steps) and its validation images as PNG files."""
    torch.set_num_threads(1)  # one thread, as the pipeline subprocesses: the same float reductions
    folder = tmp_path_factory.mktemp("one_path")
    labels = data.BUILTIN_ID2LABEL
    config = SegFormerConfig(
        hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 2], decoder_hidden_size=64,
        id2label=labels, label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    torch.manual_seed(0)
    SegFormerForSemanticSegmentation(config).save_pretrained(folder / "start")
    argv = ["--model", str(folder / "start"), "--output-dir", str(folder / "run"), "--max-steps", "150", "--learning-rate", "3e-3",
            "--eval-steps", "150", "--report-to", "none", "--num-overlays", "0"]  # fmt: skip
    results = train.run(train.parse_options(argv))
    validation = data.generate_builtin_dataset()["validation"]
    paths = []
    (folder / "images").mkdir()
    for index, sample in enumerate(validation):
        paths.append(folder / "images" / f"{index:02d}.png")
        sample["image"].save(paths[-1])
    truth = [np.asarray(sample["label"], np.int64) for sample in validation]
    return folder, argv, results, paths, truth


@pytest.fixture(scope="module")
def evaluation_maps(run):
    """The label maps the training evaluation scored, batch by batch as it does."""
    folder, argv, _, _, _ = run
    options = train.parse_options(argv)
    processor = build_image_processor(options)
    _, eval_data, _ = train.datasets.build_datasets(options, processor)
    model = SegFormerForSemanticSegmentation.from_pretrained(folder / "run" / "model").eval()
    settings = evaluation_settings(options, processor)
    maps = []
    for start in range(0, len(eval_data), options.eval_batch_size):
        batch = data.pad_collate([eval_data[i] for i in range(start, min(start + options.eval_batch_size, len(eval_data)))])
        maps += [label_map.numpy() for label_map in label_maps(model, batch, settings)]
    return maps


def pipeline_maps(python, run, name: str) -> list:
    folder, _, _, paths, _ = run
    output = folder / f"{name}.npz"
    command = [str(python), "-c", PIPELINE_RUN, str(folder / "run" / "model"), *map(str, paths), str(output)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    version, processor_module = result.stdout.split()[-2:]
    assert processor_module.startswith("transformers_modules."), "the processor must come from the saved folder"
    maps = np.load(output)
    return version, [maps[str(i)] for i in range(len(paths))]


def mean_iou(maps: list, truth: list) -> float:
    confusion = sum(confusion_matrix(torch.from_numpy(m), torch.from_numpy(t), 4) for m, t in zip(maps, truth))
    return metrics_from_confusion(confusion)["mean_iou"]


def test_evaluation_is_not_trivial(run, evaluation_maps):
    _, _, results, _, truth = run
    assert len(np.unique(np.concatenate([m.ravel() for m in evaluation_maps]))) >= 3
    assert mean_iou(evaluation_maps, truth) == pytest.approx(results["eval_mean_iou"], abs=1e-12)


def test_predict_writes_the_evaluated_label_maps(run, evaluation_maps):
    folder, _, _, paths, _ = run
    cli(["predict", str(folder / "run" / "model"), str(folder / "images"), "--output-dir", str(folder / "predicted")])
    for path, expected in zip(paths, evaluation_maps):
        with Image.open(folder / "predicted" / f"{path.stem}_labels.png") as written:
            assert np.array_equal(np.asarray(written), expected), path.name


@pytest.mark.parametrize("transformers_version", ["5", "4.46"])
def test_pipeline_without_the_package_returns_the_evaluated_label_maps(run, evaluation_maps, transformers_version, request):
    python = sys.executable if transformers_version == "5" else request.getfixturevalue("transformers_4_python")
    version, maps = pipeline_maps(python, run, f"pipeline-{transformers_version}")
    assert version.startswith(transformers_version)
    for index, (label_map, expected) in enumerate(zip(maps, evaluation_maps)):
        assert np.array_equal(label_map, expected), f"validation image {index}: {(label_map != expected).sum()} pixels differ"
    _, _, results, _, truth = run
    assert mean_iou(maps, truth) == pytest.approx(results["eval_mean_iou"], abs=1e-6)
    saved = json.loads((run[0] / "run" / "all_results.json").read_text())
    assert mean_iou(maps, truth) == pytest.approx(saved["eval_mean_iou"], abs=1e-6)
