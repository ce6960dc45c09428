"""Hub publishing: model cards, and push / load end to end over HTTP through the local Hub server
(tests/hub_server, started by tests/conftest_hub.py) with the real huggingface_hub client and
transformers, including a load by transformers 4.46 from a second virtual environment."""

import ast
import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from conftest import HUB_FILES, TINY_CONFIG, TRANSFORMERS_4
from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, PreTrainedModel

from segformer import (
    VARIANTS,
    SegFormerBackbone,
    SegFormerConfig,
    SegFormerForImageClassification,
    SegFormerForSemanticSegmentation,
    SegFormerModel,
)
from segformer.cli import main as cli_main
from segformer.errors import InputError, OptionError
from segformer.hub import find_variant, push_model_to_hub, push_to_hub, write_model_card

FIXTURES = Path(__file__).parent / "fixtures"
LABELS = {0: "sky", 1: "road", 2: "car", 3: "tree", 4: "person"}
NVIDIA_SOURCE = "nvidia/segformer-b0-finetuned-ade-512-512"
REPO_FILES = {".gitattributes", "README.md", "config.json", "model.safetensors", "preprocessor_config.json", *HUB_FILES}

# Runs in a fresh interpreter: loads argv[1] by repo id with plain transformers and `trust_remote_code`,
# runs it on the pixel values in argv[2] and writes the logits to argv[3].
REMOTE_CODE_LOAD = """
import importlib.util, json, sys
from safetensors.torch import load_file, save_file
import torch, transformers
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

assert importlib.util.find_spec("segformer") is None, "the segformer package must not be importable here"
repo_id, inputs, outputs = sys.argv[1:4]
model = AutoModelForSemanticSegmentation.from_pretrained(repo_id, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(repo_id, trust_remote_code=True)
with torch.no_grad():
    logits = model(load_file(inputs)["pixel_values"]).logits
save_file({"logits": logits.contiguous()}, outputs)
print(json.dumps({"transformers": transformers.__version__, "model": type(model).__module__,
                  "processor": type(processor).__name__}))
"""
# The same without the package: a finder that refuses it, as in an environment that never installed it.
WITHOUT_PACKAGE = "import sys\nsys.modules['segformer'] = None\n"
# Then the model card's own `trust_remote_code` snippet, which reads image.jpg from the working directory.
CARD_SNIPPET_RUN = """
exec(open("card_snippet.py").read())
print(json.dumps(dict(card_snippet_logits=list(outputs.logits.shape), card_snippet_label_map=list(label_map.shape))))
"""
# Runs in a fresh interpreter with HF_HUB_OFFLINE=1: loads argv[1] with our package from the cache.
OFFLINE_LOAD = """
import sys
from safetensors.torch import load_file, save_file
import torch
from huggingface_hub import constants
from segformer import SegFormerForSemanticSegmentation

assert constants.HF_HUB_OFFLINE
model = SegFormerForSemanticSegmentation.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    save_file({"logits": model(load_file(sys.argv[2])["pixel_values"]).logits.contiguous()}, sys.argv[3])
"""


def run_python(python, script: str, *args, env=None, cwd=None) -> str:
    command = [str(python), "-c", script, *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    assert result.returncode == 0, f"The subprocess failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


def folder_digest(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def card_metadata(path: Path) -> dict:
    return ModelCard.load(path).data.to_dict()


def python_blocks(card: str) -> list:
    return re.findall(r"```python\n(.*?)```", card, re.DOTALL)


def write_picture(path: Path, color=(200, 40, 40)) -> Path:
    Image.new("RGB", (24, 16), color).save(path)
    return path


def requests_since(server, start: int) -> list:
    return [(method, path) for method, path, _ in server.log[start:]]


# --- model cards -------------------------------------------------------------------------------------


def saved_config(model_class=SegFormerForSemanticSegmentation, variant="b0", **overrides) -> SegFormerConfig:
    """A config as `save_pretrained` leaves it (with `architectures`), without building the model."""
    return SegFormerConfig.from_variant(variant, id2label=LABELS, architectures=[model_class.__name__], **overrides)


def test_model_card_of_a_model_fine_tuned_from_nvidia(tmp_path):
    path = write_model_card(
        tmp_path, saved_config(), source=NVIDIA_SOURCE, dataset="scene_parse_150", metrics={"mIoU": 37.4}, repo_id="me/b0"
    )
    metadata, text = card_metadata(path), path.read_text()
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "image-segmentation"
    assert metadata["license"] == "other" and metadata["license_name"].startswith("nvidia")
    assert "non-commercial" in metadata["tags"] and "mit-b0" in metadata["tags"]
    assert metadata["datasets"] == ["scene_parse_150"] and metadata["base_model"] == NVIDIA_SOURCE
    [result] = metadata["model-index"][0]["results"]
    assert result["metrics"] == [{"type": "mean_iou", "value": 37.4, "name": "mIoU"}]
    assert result["dataset"]["name"] == "scene_parse_150"
    assert 'AutoModelForSemanticSegmentation.from_pretrained("me/b0", trust_remote_code=True)' in text
    assert 'SegFormerForSemanticSegmentation.from_pretrained("me/b0")' in text
    assert "MiT-B0" in text and f"Fine-tuned on `scene_parse_150` from `{NVIDIA_SOURCE}`" in text
    assert "Non-commercial use only" in text
    assert all(f"| {index} | {label} |" in text for index, label in LABELS.items())


@pytest.mark.parametrize(
    "model_class, pipeline_tag, auto_class",
    [
        (SegFormerForSemanticSegmentation, "image-segmentation", "AutoModelForSemanticSegmentation"),
        (SegFormerForImageClassification, "image-classification", "AutoModelForImageClassification"),
    ],
)
def test_model_card_task_follows_the_architecture(tmp_path, model_class, pipeline_tag, auto_class):
    path = write_model_card(tmp_path, saved_config(model_class, "b2"), repo_id="me/model")
    assert card_metadata(path)["pipeline_tag"] == pipeline_tag
    assert f'{auto_class}.from_pretrained("me/model", trust_remote_code=True)' in path.read_text()
    assert "MiT-B2" in path.read_text()


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_card_names_the_variant(variant):
    assert find_variant(SegFormerConfig.from_variant(variant)) == variant
    custom = SegFormerConfig.from_variant(variant, depths=[1, 1, 1, 1])
    assert find_variant(custom) is None


def test_model_card_license_of_own_weights(tmp_path):
    metadata = card_metadata(write_model_card(tmp_path, saved_config(), dataset="my-org/streets", license="apache-2.0"))
    assert metadata["license"] == "apache-2.0" and "non-commercial" not in metadata["tags"]
    text = write_model_card(tmp_path, saved_config(**TINY_CONFIG)).read_text()
    assert "license" not in card_metadata(tmp_path / "README.md") and "Not specified" in text
    assert "a custom Mix Transformer" in text and "Saved with the `segformer` package" in text


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(source="NVlabs/SegFormer segformer.b0.pth", license="mit"), ValueError, "non-commercial"),
        (dict(metrics={"mean_iou": 0.4}), ValueError, "dataset"),
        (dict(folder="missing"), FileNotFoundError, "not a folder"),
    ],
)
def test_model_card_rejects_what_it_cannot_write(tmp_path, kwargs, error, message):
    folder = tmp_path / kwargs.pop("folder", "")
    with pytest.raises(error, match=message):
        write_model_card(folder, saved_config(), **kwargs)


# (architecture, the variable the first snippet ends with, the pipeline it shows or None)
SNIPPET_RESULTS = [
    (SegFormerForSemanticSegmentation, "label_map", "image-segmentation"),
    (SegFormerForImageClassification, "label", "image-classification"),
    (SegFormerModel, "features", None),
    (SegFormerBackbone, "features", None),
]


@pytest.mark.parametrize("model_class, result, pipeline_tag", SNIPPET_RESULTS, ids=lambda v: getattr(v, "__name__", v))
def test_model_card_snippets_are_python_and_end_in_a_result(tmp_path, model_class, result, pipeline_tag):
    text = write_model_card(tmp_path, saved_config(model_class), repo_id="me/model").read_text()
    blocks = python_blocks(text)
    for block in blocks:
        ast.parse(block)
    last = ast.parse(blocks[0]).body[-1]
    assert isinstance(last, ast.Assign) and last.targets[0].id == result
    assert 'AutoImageProcessor.from_pretrained("me/model", trust_remote_code=True)' in blocks[0]
    # The processor is named: transformers 4.x's pipeline() loads only processors of its own model types.
    pipeline_call = f'pipeline("{pipeline_tag}", model="me/model", image_processor="me/model", trust_remote_code=True)'
    assert (pipeline_call in text) == (pipeline_tag is not None)
    if model_class is SegFormerForSemanticSegmentation:
        assert "processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]" in blocks[0]


@pytest.mark.slow
@pytest.mark.parametrize("model_class, result, pipeline_tag", SNIPPET_RESULTS, ids=lambda v: getattr(v, "__name__", v))
def test_model_card_snippets_run_on_the_pushed_model(
    hub_server, hub_repo_id, tmp_path, monkeypatch, model_class, result, pipeline_tag
):
    """The card's transformers snippets, run on the pushed model: the result comes out post-processed."""
    config = SegFormerConfig(**{**TINY_CONFIG, "id2label": LABELS})
    model_class(config).push_to_hub(hub_repo_id)
    blocks = python_blocks(hub_server.files(hub_repo_id)["README.md"].decode())
    write_picture(tmp_path / "image.jpg")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(blocks[0], namespace)
    value = namespace[result]
    if model_class is SegFormerForSemanticSegmentation:
        assert value.shape == (16, 24) and set(value.unique().tolist()) <= set(LABELS)
    elif model_class is SegFormerForImageClassification:
        assert value in LABELS.values()
    else:
        assert len(value) == (4 if model_class is SegFormerModel else len(config.out_features))
    if pipeline_tag is not None:
        exec(blocks[1], namespace)
        answer = namespace["segments" if pipeline_tag == "image-segmentation" else "predictions"]
        assert answer and {entry["label"] for entry in answer} <= set(LABELS.values())


def test_model_card_pictures_hyperparameters_and_tags(tmp_path, hub_server):
    folder, pictures = tmp_path / "model", tmp_path / "run"
    folder.mkdir(), pictures.mkdir()
    prediction = write_picture(pictures / "prediction_0.png")
    curves = write_picture(pictures / "curves.JPG", (10, 90, 200))
    hyperparameters = {"learning_rate": 6e-5, "batch_size": 8, "crop_size": [512, 512], "scheduler": "poly|1.0"}
    path = write_model_card(
        folder,
        saved_config(),
        dataset="my-org/streets",
        metrics={"mIoU": 40.1},
        tags=["streets", "segformer", "b"],
        hyperparameters=hyperparameters,
        prediction_image=prediction,
        training_curves=curves,
        repo_id="me/streets",
    )
    text = path.read_text()
    assert (folder / "images" / "prediction.png").read_bytes() == prediction.read_bytes()
    assert (folder / "images" / "training_curves.jpg").read_bytes() == curves.read_bytes()
    assert sorted(p.name for p in pictures.iterdir()) == ["curves.JPG", "prediction_0.png"]  # sources untouched
    assert "](images/prediction.png)" in text and "](images/training_curves.jpg)" in text
    assert "| hyper-parameter | value |" in text
    assert "| learning_rate | 6e-05 |" in text and "| crop_size | [512, 512] |" in text
    assert "| scheduler | poly\\|1.0 |" in text  # a | in a value does not break the table
    tags = card_metadata(path)["tags"]
    assert tags[-2:] == ["streets", "b"] and tags.count("segformer") == 1
    # The Hub's metadata check accepts the card (ModelCard.validate posts it to HF_ENDPOINT: the test Hub).
    start = len(hub_server.log)
    ModelCard.load(path).validate()
    assert hub_server.log[start:] == [("POST", "/api/validate-yaml", 200)]
    # Rewriting the card from the pictures already in place keeps them.
    write_model_card(folder, saved_config(), prediction_image=folder / "images" / "prediction.png")
    assert (folder / "images" / "prediction.png").read_bytes() == prediction.read_bytes()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(prediction_image="missing.png"), InputError, "missing.png"),
        (dict(training_curves="run.log"), OptionError, r"\.png"),
        (dict(tags=["ok", ""]), OptionError, "non-empty"),
    ],
)
def test_model_card_rejects_bad_pictures_and_tags(tmp_path, monkeypatch, kwargs, error, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.log").write_text("loss 1.0")
    (tmp_path / "model").mkdir()
    with pytest.raises(error, match=message):
        write_model_card(tmp_path / "model", saved_config(), **kwargs)


# --- end to end through the local Hub ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pixel_values():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def pushed(hub_server, hub_user, pixel_values):
    """A tiny model pushed with `model.push_to_hub`: (repo id, model, its logits on `pixel_values`)."""
    torch.manual_seed(0)
    model = SegFormerForSemanticSegmentation(SegFormerConfig(**{**TINY_CONFIG, "id2label": LABELS})).eval()
    repo_id = f"{hub_user}/tiny-segformer"
    model.push_to_hub(repo_id, dataset="my-org/streets", metrics={"mIoU": 12.5, "pixel_accuracy": 0.5})
    with torch.no_grad():
        return repo_id, model, model(pixel_values).logits


def test_push_to_hub_uploads_the_full_repo(hub_server, pushed):
    repo_id, model, _ = pushed
    files = hub_server.files(repo_id)
    assert set(files) == REPO_FILES
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_segformer.SegFormerForSemanticSegmentation"
    assert config["auto_map"]["AutoConfig"] == "configuration_segformer.SegFormerConfig"
    package = Path(sys.modules["segformer"].__file__).parent
    assert files["modeling_segformer.py"] == (package / "modeling_segformer.py").read_bytes()
    # The weights went through the LFS batch / upload / verify flow, the rest as regular git blobs.
    stored = hub_server.repo(repo_id).resolve("main").files
    assert [path for path, file in stored.items() if file.lfs] == ["model.safetensors"]
    # Our card won over transformers' generic one; the Hub parsed its metadata.
    info = HfApi().model_info(repo_id)
    assert info.pipeline_tag == "image-segmentation" and info.library_name == "transformers"
    assert info.card_data.datasets == ["my-org/streets"]
    assert info.card_data.eval_results[0].metric_value == 12.5
    assert info.config["model_type"] == "segformer-mit"


def test_from_pretrained_by_repo_id_with_the_package(pushed, pixel_values):
    repo_id, _, logits = pushed
    for load in (SegFormerForSemanticSegmentation.from_pretrained, AutoModelForSemanticSegmentation.from_pretrained):
        model = load(repo_id).eval()
        assert isinstance(model, SegFormerForSemanticSegmentation)
        with torch.no_grad():
            assert torch.equal(model(pixel_values).logits, logits)
    assert type(AutoImageProcessor.from_pretrained(repo_id)).__name__ == "SegFormerImageProcessor"


def load_with_remote_code(python, hub_server, repo_id, pixel_values, folder: Path, prefix: str = ""):
    """Run REMOTE_CODE_LOAD and the card's snippet with `python`: (report, snippet report, logits)."""
    save_file({"pixel_values": pixel_values}, folder / "inputs.safetensors")
    card = hub_server.files(repo_id)["README.md"].decode()
    (folder / "card_snippet.py").write_text(re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1))
    Image.new("RGB", (96, 64), (90, 150, 60)).save(folder / "image.jpg")
    script = prefix + REMOTE_CODE_LOAD + CARD_SNIPPET_RUN
    output = run_python(python, script, repo_id, "inputs.safetensors", "out.safetensors", cwd=folder)
    report, snippet = map(json.loads, output.splitlines()[-2:])
    assert report["model"].startswith("transformers_modules.")  # the code came from the repo
    assert report["processor"] == "SegFormerImageProcessor"
    # 64x96 image: short side to 512, aspect ratio kept (512x768 input), stride 4.
    assert snippet["card_snippet_logits"] == [1, len(LABELS), 128, 192]
    assert snippet["card_snippet_label_map"] == [64, 96]  # post-processed back to the image's (H, W)
    return report, load_file(folder / "out.safetensors")["logits"]


@pytest.mark.slow
def test_trust_remote_code_load_without_the_package(hub_server, pushed, pixel_values, tmp_path):
    repo_id, _, logits = pushed
    _, remote_logits = load_with_remote_code(sys.executable, hub_server, repo_id, pixel_values, tmp_path, WITHOUT_PACKAGE)
    assert torch.equal(remote_logits, logits)


def test_second_push_of_unchanged_files_makes_no_commit(hub_server, hub_repo_id, pushed):
    _, model, _ = pushed
    first = model.push_to_hub(hub_repo_id, dataset="my-org/streets", metrics={"mIoU": 12.5})
    head = hub_server.repo(hub_repo_id).refs["main"]
    start = len(hub_server.log)
    assert model.push_to_hub(hub_repo_id, dataset="my-org/streets", metrics={"mIoU": 12.5}) == first
    assert hub_server.repo(hub_repo_id).refs["main"] == head and first.endswith(f"/commit/{head}")
    requests = requests_since(hub_server, start)
    assert not [request for request in requests if "/commit/" in request[1] or request[0] == "PUT"]


def test_push_to_a_revision_with_a_commit_message(hub_server, hub_repo_id, pushed, pixel_values):
    _, model, logits = pushed
    model.push_to_hub(hub_repo_id)
    main = hub_server.repo(hub_repo_id).refs["main"]
    model.push_to_hub(hub_repo_id, revision="v1", commit_message="Release v1", metrics={"mIoU": 99.0}, dataset="x")
    repo = hub_server.repo(hub_repo_id)
    assert repo.refs["main"] == main  # the branch moved, main did not
    assert repo.resolve("v1").title == "Release v1" and repo.resolve("v1").parent == main
    assert b"99.0" in hub_server.files(hub_repo_id, "v1")["README.md"]
    loaded = SegFormerForSemanticSegmentation.from_pretrained(hub_repo_id, revision="v1").eval()
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).logits, logits)


def test_push_as_a_pull_request(hub_server, hub_repo_id, pushed):
    _, model, _ = pushed
    model.push_to_hub(hub_repo_id)
    main = hub_server.repo(hub_repo_id).refs["main"]
    model.push_to_hub(hub_repo_id, create_pr=True, metrics={"mIoU": 1.0}, dataset="x")
    url = model.push_to_hub(hub_repo_id, create_pr=True, metrics={"mIoU": 2.0}, dataset="x")
    assert url == f"{hub_server.url}/{hub_repo_id}/discussions/2"
    repo = hub_server.repo(hub_repo_id)
    assert repo.refs["main"] == main and repo.resolve("refs/pr/2").parent == main
    assert b"2.0" in hub_server.files(hub_repo_id, "refs/pr/2")["README.md"]


def assert_takes_the_arguments_of(theirs: list, same_defaults: bool):
    """`model.push_to_hub`, which passes its arguments on to `push_model_to_hub(model, ...)`, takes every
    argument of a transformers `push_to_hub` (`theirs`: (name, kind, default) in order): positional ones at
    the same position, keyword ones by name, `**kwargs` likewise."""
    ours = list(inspect.signature(push_model_to_hub).parameters.values())
    names = [parameter.name for parameter in ours]
    assert len(theirs) > 5
    for index, (name, kind, default) in enumerate(theirs[1:], start=1):  # after self / model
        if kind == "VAR_KEYWORD":
            assert ours[-1].kind is inspect.Parameter.VAR_KEYWORD
            continue
        assert name in names, f"transformers' push_to_hub takes {name!r}, ours does not"
        parameter = ours[names.index(name)]
        if kind == "POSITIONAL_OR_KEYWORD":
            assert (names.index(name), parameter.kind.name) == (index, kind), name
        else:
            assert parameter.kind.name in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"), name
        if same_defaults:
            assert parameter.default == default, name


def test_push_to_hub_takes_every_argument_of_transformers():
    theirs = inspect.signature(PreTrainedModel.push_to_hub).parameters.values()
    assert_takes_the_arguments_of([(p.name, p.kind.name, p.default) for p in theirs], same_defaults=True)


def test_push_with_tags_pictures_and_a_commit_description(hub_server, hub_repo_id, tmp_path):
    model = SegFormerForSemanticSegmentation(SegFormerConfig(**TINY_CONFIG))
    model.add_model_tags(["from-model"])
    url = model.push_to_hub(
        hub_repo_id,
        tags=["a", "b"],
        commit_message="Training run 3",
        commit_description="600 steps on streets",
        hyperparameters={"learning_rate": 1e-3, "max_steps": 600},
        prediction_image=write_picture(tmp_path / "prediction_0.png"),
        training_curves=write_picture(tmp_path / "training_curves.png"),
    )
    files = hub_server.files(hub_repo_id)
    assert set(files) == REPO_FILES | {"images/prediction.png", "images/training_curves.png"}
    assert files["images/prediction.png"] == (tmp_path / "prediction_0.png").read_bytes()
    metadata = yaml.safe_load(files["README.md"].split(b"---")[1])
    assert metadata["tags"][-3:] == ["from-model", "a", "b"] and "segformer" in metadata["tags"]
    assert {"a", "b", "from-model"} <= set(HfApi().model_info(hub_repo_id).tags)
    card = files["README.md"].decode()
    assert "| learning_rate | 0.001 |" in card and "![Training curves](images/training_curves.png)" in card
    head = hub_server.repo(hub_repo_id).resolve("main")
    assert (head.title, head.description) == ("Training run 3", "600 steps on streets")
    assert url.endswith(f"/commit/{head.oid}")


def test_push_with_the_arguments_of_transformers_4(hub_server, hub_repo_id, tmp_path, monkeypatch):
    model = SegFormerForSemanticSegmentation(SegFormerConfig(**TINY_CONFIG))
    monkeypatch.chdir(tmp_path)
    owner, name = hub_repo_id.split("/")
    # Positional use_temp_dir=False and commit_message, and the deprecated keywords, as transformers 4.46 takes them.
    with pytest.warns(FutureWarning) as warned:
        model.push_to_hub(name, False, "Positional message", organization=owner, use_auth_token=os.environ["HF_TOKEN"])
    messages = " ".join(str(warning.message) for warning in warned)
    assert "`use_auth_token` is deprecated" in messages and "`organization` is deprecated" in messages
    assert set(hub_server.files(hub_repo_id)) == REPO_FILES
    assert hub_server.repo(hub_repo_id).resolve("main").title == "Positional message"
    assert {path.name for path in (tmp_path / name).iterdir()} == REPO_FILES - {".gitattributes"}  # kept
    start = len(hub_server.log)
    with pytest.raises(TypeError, match="datset"):
        model.push_to_hub(hub_repo_id, datset="typo")
    with pytest.raises(OptionError, match="both specified"):
        model.push_to_hub(hub_repo_id, token=os.environ["HF_TOKEN"], use_auth_token=os.environ["HF_TOKEN"])
    if "safe_serialization" not in inspect.signature(PreTrainedModel.save_pretrained).parameters:
        with pytest.raises(OptionError, match="safetensors only"):
            model.push_to_hub(hub_repo_id, safe_serialization=False)
    assert hub_server.log[start:] == []  # refused before any request


def test_private_repo_needs_the_token(hub_server, hub_repo_id, pushed):
    _, model, _ = pushed
    model.push_to_hub(hub_repo_id, private=True)
    assert HfApi().model_info(hub_repo_id).private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(hub_repo_id)
    with pytest.raises(OSError, match="not a valid model identifier|private"):
        SegFormerForSemanticSegmentation.from_pretrained(hub_repo_id, token=False)


@pytest.mark.slow
def test_snapshot_download_then_offline_reload(hub_server, pushed, pixel_values, tmp_path):
    repo_id, _, logits = pushed
    folder = Path(snapshot_download(repo_id))
    assert {path.name for path in folder.iterdir()} == REPO_FILES
    save_file({"pixel_values": pixel_values}, tmp_path / "inputs.safetensors")
    start = len(hub_server.log)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run_python(sys.executable, OFFLINE_LOAD, repo_id, tmp_path / "inputs.safetensors", tmp_path / "out", env=env)
    assert hub_server.log[start:] == []  # the reload did not touch the network
    assert torch.equal(load_file(tmp_path / "out")["logits"], logits)


@pytest.mark.parametrize(
    "method, path, status",
    [("PUT", r"^/lfs/upload/", 507), ("POST", r"/commit/main$", 500)],
    ids=["lfs-upload", "commit"],
)
def test_failed_upload_says_what_failed_and_keeps_the_folder(hub_server, hub_repo_id, pushed, tmp_path, method, path, status):
    _, model, _ = pushed
    model.save_pretrained(tmp_path)
    write_model_card(tmp_path, model.config, repo_id=hub_repo_id)
    before = folder_digest(tmp_path)
    hub_server.inject_failure(method, path, status)
    with pytest.raises(RuntimeError, match=rf"(?s){hub_repo_id}.*{status}.*is unchanged"):
        push_to_hub(tmp_path, hub_repo_id)
    assert folder_digest(tmp_path) == before
    assert set(hub_server.files(hub_repo_id)) == {".gitattributes"}  # nothing half-committed
    push_to_hub(tmp_path, hub_repo_id)  # the retry completes it
    assert set(hub_server.files(hub_repo_id)) == REPO_FILES


def test_push_refuses_a_folder_without_a_model(hub_server, hub_repo_id, tmp_path):
    start = len(hub_server.log)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        push_to_hub(tmp_path, hub_repo_id)
    assert hub_server.log[start:] == []


def test_push_a_converted_model(hub_server, hub_repo_id, tmp_path, pixel_values):
    cli_main(["convert", str(FIXTURES / "tf4-segformer-ade"), "--output-dir", str(tmp_path), "--push-to-hub", hub_repo_id])
    assert set(hub_server.files(hub_repo_id)) == REPO_FILES
    assert card_metadata(tmp_path / "README.md")["pipeline_tag"] == "image-segmentation"
    converted = SegFormerForSemanticSegmentation.from_pretrained(tmp_path).eval()
    pushed = SegFormerForSemanticSegmentation.from_pretrained(hub_repo_id).eval()
    with torch.no_grad():
        assert torch.equal(pushed(pixel_values).logits, converted(pixel_values).logits)


# --- transformers 4.x ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_push_to_hub_takes_every_argument_of_transformers_4(transformers_4_python):
    script = (
        "import inspect, json; from transformers import PreTrainedModel; "
        "parameters = inspect.signature(PreTrainedModel.push_to_hub).parameters.values(); "
        "print(json.dumps([[p.name, p.kind.name] for p in parameters]))"
    )
    theirs = json.loads(run_python(transformers_4_python, script))
    assert "safe_serialization" in dict(theirs) and "use_temp_dir" in dict(theirs)
    assert_takes_the_arguments_of([(name, kind, None) for name, kind in theirs], same_defaults=False)


@pytest.mark.slow
def test_transformers_4_loads_the_pushed_custom_code(hub_server, pushed, pixel_values, transformers_4_python, tmp_path):
    repo_id, _, logits = pushed
    report, remote_logits = load_with_remote_code(transformers_4_python, hub_server, repo_id, pixel_values, tmp_path)
    assert report["transformers"] == TRANSFORMERS_4
    max_difference = (remote_logits - logits).abs().max().item()
    print(f"transformers {TRANSFORMERS_4} vs {sys.modules['transformers'].__version__}: max |logits diff| {max_difference:.2e}")
    assert max_difference < 1e-6


# --- the server is as strict as the Hub --------------------------------------------------------------


def hub_request(server, method, path, body=None, headers=None, token=True):
    """(status, headers, body) of a raw request, without the client's own checks."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {next(iter(server.tokens))}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


LFS = {"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
SHA = "ab" * 32


def ndjson(*lines) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


HEADER = {"key": "header", "value": {"summary": "test"}}


@pytest.mark.parametrize(
    "method, path, body, headers, token, status, code",
    [
        ("POST", "/api/repos/create", {"name": "strict"}, {}, True, 409, None),
        ("POST", "/api/repos/create", {"name": "../x"}, {}, True, 400, None),
        ("POST", "/api/repos/create", {"name": "new"}, {}, False, 401, None),
        ("GET", "/{repo}/resolve/main/missing.json", None, {}, True, 404, "EntryNotFound"),
        ("GET", "/{repo}/resolve/nobranch/config.json", None, {}, True, 404, "RevisionNotFound"),
        ("GET", "/{user}/nothere/resolve/main/config.json", None, {}, True, 401, "RepoNotFound"),
        ("POST", "/api/models/{repo}/preupload/main", {"files": [{"path": "a.txt"}]}, {}, True, 400, None),
        ("POST", "/api/models/{repo}/preupload/main", b"{not json", {}, True, 400, None),
        ("POST", "/api/models/{repo}/preupload/main", {"files": [{"path": "/abs", "size": 1, "sample": ""}]}, {}, True, 400, None),
        ("POST", "/{repo}.git/info/lfs/objects/batch", {"operation": "upload", "objects": [{"oid": "xyz", "size": 1}]}, LFS, True, 400, None),
        ("POST", "/{repo}.git/info/lfs/objects/batch", {"operation": "upload", "transfers": ["xet"], "objects": []}, LFS, True, 400, None),
        ("POST", "/{repo}.git/info/lfs/objects/batch", {"operation": "upload", "objects": []}, {}, True, 400, None),
        ("POST", "/api/models/{repo}/commit/main", ndjson(HEADER, {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": SHA}}), NDJSON, True, 400, None),
        ("POST", "/api/models/{repo}/commit/main", ndjson({"key": "file", "value": {"path": "a", "content": "", "encoding": "base64"}}), NDJSON, True, 400, None),
        ("POST", "/api/models/{repo}/commit/main", ndjson(HEADER), {}, True, 400, None),
        ("POST", "/api/models/{repo}/commit/main", ndjson(HEADER), NDJSON, False, 401, None),
        ("GET", "/api/models/{repo}/xet-write-token/main", None, {}, True, 501, None),
        ("POST", "/api/validate-yaml", {"content": "---\nlicense: other\n---\n", "repoType": "model"}, {}, False, 400, None),
        ("POST", "/api/validate-yaml", {"content": "---\npipeline_tag: not-a-task\n---\n", "repoType": "model"}, {}, False, 400, None),
    ],
    ids=[
        "create-existing", "create-bad-name", "create-anonymous", "resolve-missing-file", "resolve-missing-revision",
        "resolve-missing-repo", "preupload-no-size", "preupload-bad-json", "preupload-absolute-path",
        "lfs-bad-oid", "lfs-xet-only", "lfs-wrong-content-type", "commit-unknown-lfs-object", "commit-no-header",
        "commit-not-ndjson", "commit-anonymous", "xet-token", "card-license-other-unnamed", "card-unknown-pipeline-tag",
    ],
)
def test_server_rejects_malformed_requests(hub_server, hub_user, method, path, body, headers, token, status, code):
    repo_id = f"{hub_user}/strict"
    if repo_id not in hub_server.store.repos:
        HfApi().create_repo(repo_id)
        HfApi().upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
    path = path.format(repo=repo_id, user=hub_user)
    answer_status, answer_headers, answer_body = hub_request(hub_server, method, path, body, headers, token)
    assert answer_status == status, answer_body
    assert answer_headers.get("X-Error-Code") == code
    if status == 409:
        assert json.loads(answer_body)["url"] == f"{hub_server.url}/{repo_id}"


def test_server_checks_uploaded_content_against_its_hash(hub_server, hub_repo_id):
    HfApi().create_repo(hub_repo_id)
    content = b"weights" * 100
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": hashlib.sha256(content).hexdigest(), "size": len(content)}]}
    _, _, answer = hub_request(hub_server, "POST", f"/{hub_repo_id}.git/info/lfs/objects/batch", batch, LFS)
    upload = json.loads(answer)["objects"][0]["actions"]["upload"]["href"].removeprefix(hub_server.storage_url)
    assert hub_request(hub_server, "PUT", upload, content[:-1] + b"X", token=False)[0] == 400
    assert hub_request(hub_server, "PUT", upload, content, token=False)[0] == 200


def test_server_resolve_headers_match_the_hub(hub_server, pushed):
    repo_id, _, _ = pushed
    file = hub_server.repo(repo_id).resolve("main").files["config.json"]
    status, headers, body = hub_request(hub_server, "GET", f"/{repo_id}/resolve/main/config.json", token=False)
    assert status == 200 and body == file.data and int(headers["Content-Length"]) == len(body)
    assert headers["ETag"] == f'"{file.blob_id}"' and headers["X-Repo-Commit"] == hub_server.repo(repo_id).refs["main"]
    weights = hub_server.repo(repo_id).resolve("main").files["model.safetensors"]
    local = Path(hf_hub_download(repo_id, "model.safetensors"))
    assert hashlib.sha256(local.read_bytes()).hexdigest() == weights.sha256 == local.resolve().name
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.bin")
    assert yaml.safe_load(hub_server.files(repo_id)["README.md"].split(b"---")[1])["library_name"] == "transformers"
