"""The model family inside transformers: Auto classes, other heads on the backbone, saved folders that
load as Hub custom code without this package, and the image-segmentation pipeline."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

import segformer
from segformer import (
    SegFormerBackbone,
    SegFormerConfig,
    SegFormerForImageClassification,
    SegFormerForSemanticSegmentation,
    SegFormerModel,
)
from segformer import SegFormerImageProcessor
from segformer.inference import segment_images
from conftest import HUB_FILES, TINY_CONFIG, TRANSFORMERS_4

PACKAGE_DIR = Path(segformer.__file__).parent
LABELS = {0: "sky", 1: "road", 2: "car", 3: "tree", 4: "person"}


def test_auto_config_resolves_our_model_type():
    assert AutoConfig.for_model("segformer-mit").__class__ is SegFormerConfig


@pytest.mark.parametrize(
    "auto_class, model_class",
    [
        (AutoModel, SegFormerModel),
        (AutoModelForSemanticSegmentation, SegFormerForSemanticSegmentation),
        (AutoModelForImageClassification, SegFormerForImageClassification),
        (AutoBackbone, SegFormerBackbone),
    ],
)
def test_auto_classes_resolve(tiny_config, auto_class, model_class):
    assert type(auto_class.from_config(tiny_config())) is model_class


def test_auto_backbone_honours_out_features(tiny_config):
    backbone = AutoBackbone.from_config(tiny_config(out_features=["stage1", "stage3"]))
    assert backbone.out_features == ["stage1", "stage3"]
    assert backbone.channels == [8, 24]
    maps = backbone(torch.randn(1, 3, 64, 48)).feature_maps
    assert [m.shape[1] for m in maps] == backbone.channels


def test_upernet_runs_on_our_backbone(tiny_config):
    # transformers' UperNet takes any registered backbone config: the "other decoders" use case.
    config = UperNetConfig(
        backbone_config=tiny_config(), hidden_size=16, auxiliary_in_channels=24, auxiliary_channels=8, num_labels=3
    )
    model = UperNetForSemanticSegmentation(config)
    assert type(model.backbone) is SegFormerBackbone
    outputs = model(torch.randn(2, 3, 45, 61), labels=torch.randint(0, 3, (2, 45, 61)))
    assert outputs.logits.shape == (2, 3, 45, 61)
    outputs.loss.backward()
    assert model.backbone.segformer.stages[0].patch_embed.proj.weight.grad.abs().sum() > 0


def test_load_backbone_builds_ours_with_transformers_backbone_attributes(tiny_config):
    # What transformers' heads call to build their backbone; it moved from `utils` in transformers 5.
    try:
        from transformers.backbone_utils import load_backbone
    except ImportError:
        from transformers.utils.backbone_utils import load_backbone
    config = UperNetConfig(
        backbone_config=tiny_config(out_features=["stage2", "stage4"]), hidden_size=16, use_auxiliary_head=False,
        num_labels=3,
    )
    backbone = load_backbone(config)
    assert type(backbone) is SegFormerBackbone
    assert backbone.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert backbone.num_features == [3, 8, 16, 24, 32]
    assert backbone.out_feature_channels == {"stem": 3, "stage1": 8, "stage2": 16, "stage3": 24, "stage4": 32}
    assert (backbone.out_features, backbone.out_indices, backbone.channels) == (["stage2", "stage4"], [2, 4], [16, 32])
    # UperNet sizes its head from `channels` and runs on the two maps.
    model = UperNetForSemanticSegmentation(config).eval()
    assert model.backbone.channels == [16, 32]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 48)).logits.shape == (1, 3, 64, 48)


BACKBONE_ATTRIBUTES = ("stage_names", "num_features", "out_feature_channels", "out_features", "out_indices", "channels")
# The tiny config selecting stages 2 and 4, then stage 1 alone (through the backbone's `out_indices`).
BACKBONE_EXPECTED = [
    {"stage_names": ["stem", "stage1", "stage2", "stage3", "stage4"], "num_features": [3, 8, 16, 24, 32],
     "out_feature_channels": {"stem": 3, "stage1": 8, "stage2": 16, "stage3": 24, "stage4": 32},
     "out_features": ["stage2", "stage4"], "out_indices": [2, 4], "channels": [16, 32],
     "backbone_type": "transformers"},
    {"out_features": ["stage1"], "out_indices": [1], "channels": [8]},
]  # fmt: skip


def backbone_attributes(backbone) -> list:
    """`BACKBONE_EXPECTED` as `backbone` has it."""
    first = {name: getattr(backbone, name) for name in BACKBONE_ATTRIBUTES}
    first["backbone_type"] = backbone.backbone_type.value
    backbone.out_indices = [1]
    return [first, {name: getattr(backbone, name) for name in ("out_features", "out_indices", "channels")}]


def test_backbone_is_a_transformers_backbone(tiny_config):
    try:  # transformers 5, then 4
        from transformers.backbone_utils import BackboneMixin, BackboneType
    except ImportError:
        from transformers.utils.backbone_utils import BackboneMixin, BackboneType
    backbone = SegFormerBackbone(tiny_config(out_features=["stage2", "stage4"]))
    assert isinstance(backbone, BackboneMixin)
    assert backbone.backbone_type is BackboneType.TRANSFORMERS
    assert backbone_attributes(backbone) == BACKBONE_EXPECTED
    assert backbone.config.out_indices == [1]  # the selection lives in the config


def test_backbone_attributes_without_transformers_backbone_mixin(tiny_config, monkeypatch):
    # The model file's stand-in, for a transformers that moves the mixin again: the same attributes.
    name = "segformer._modeling_without_backbone_utils"
    spec = importlib.util.spec_from_file_location(name, PACKAGE_DIR / "modeling_segformer.py")
    module = importlib.util.module_from_spec(spec)
    with monkeypatch.context() as patch:
        for moved in ("transformers.backbone_utils", "transformers.utils.backbone_utils"):
            patch.setitem(sys.modules, moved, None)  # makes the import fail
        spec.loader.exec_module(module)
    assert module.BackboneMixin.__module__ == name
    backbone = module.SegFormerBackbone(tiny_config(out_features=["stage2", "stage4"]))
    assert backbone_attributes(backbone) == BACKBONE_EXPECTED


TRANSFORMERS_4_BACKBONE = """
import json, sys, torch
import transformers
from transformers import AutoBackbone, AutoConfig, UperNetConfig, UperNetForSemanticSegmentation
from transformers.utils.backbone_utils import BackboneMixin, load_backbone
sys.path.insert(0, sys.argv[1])
from hub_files.configuration_segformer import SegFormerConfig
from hub_files.modeling_segformer import SegFormerBackbone
AutoConfig.register(SegFormerConfig.model_type, SegFormerConfig)
AutoBackbone.register(SegFormerConfig, SegFormerBackbone)
config = SegFormerConfig(**json.loads(sys.argv[2]))
backbone = load_backbone(UperNetConfig(backbone_config=config, hidden_size=16, use_auxiliary_head=False, num_labels=3))
first = {name: getattr(backbone, name) for name in json.loads(sys.argv[3])}
first["backbone_type"] = backbone.backbone_type.value
report = {"transformers": transformers.__version__, "mixin": isinstance(backbone, BackboneMixin), "first": first}
model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=config, hidden_size=16, use_auxiliary_head=False,
                                                     num_labels=3)).eval()
with torch.no_grad():
    report["logits"] = list(model(torch.randn(1, 3, 64, 48)).logits.shape)
backbone.out_indices = [1]
report["second"] = {name: getattr(backbone, name) for name in ("out_features", "out_indices", "channels")}
print(json.dumps(report))
"""


@pytest.mark.slow
def test_transformers_4_builds_our_backbone_from_the_hub_files(transformers_4_python, tmp_path):
    # Hub custom code on transformers 4.46 (without this package): its `load_backbone` and UperNet take our
    # backbone, which derives from 4.46's mixin and has the same attributes as on transformers 5.
    package = tmp_path / "hub_files"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in HUB_FILES:
        (package / name).write_text((PACKAGE_DIR / name).read_text())
    fields = {**TINY_CONFIG, "out_features": ["stage2", "stage4"]}
    command = [str(transformers_4_python), "-c", TRANSFORMERS_4_BACKBONE, str(tmp_path), json.dumps(fields),
               json.dumps(BACKBONE_ATTRIBUTES)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["transformers"] == TRANSFORMERS_4 and report["mixin"]
    assert [report["first"], report["second"]] == BACKBONE_EXPECTED
    assert report["logits"] == [1, 3, 64, 48]


@pytest.mark.parametrize(
    "model_class, auto_class",
    [
        (SegFormerForSemanticSegmentation, "AutoModelForSemanticSegmentation"),
        (SegFormerForImageClassification, "AutoModelForImageClassification"),
        (SegFormerModel, "AutoModel"),
        (SegFormerBackbone, "AutoBackbone"),
    ],
)
def test_save_pretrained_writes_a_self_contained_folder(tiny_config, tmp_path, model_class, auto_class):
    model_class(tiny_config()).save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", *HUB_FILES} <= files
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_segformer.SegFormerConfig",
        auto_class: f"modeling_segformer.{model_class.__name__}",
    }
    for name in HUB_FILES:
        assert (tmp_path / name).read_bytes() == (PACKAGE_DIR / name).read_bytes()
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "SegFormerImageProcessor"
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_segformer.SegFormerImageProcessor"}


def test_segmentation_model_starts_from_a_classification_checkpoint(tiny_config, tmp_path):
    # ImageNet-pretrained MiT encoders are the usual start of segmentation training.
    classifier = SegFormerForImageClassification(tiny_config())
    classifier.save_pretrained(tmp_path)
    segmenter = SegFormerForSemanticSegmentation.from_pretrained(tmp_path)
    encoder = AutoModel.from_pretrained(tmp_path)
    expected = classifier.segformer.state_dict()
    for loaded in (segmenter.segformer.state_dict(), encoder.state_dict()):
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)


# ---------------------------------------------------------------------------------------------------
# A saved folder works without this package: custom code from the folder, in a clean subprocess.

REMOTE_CODE_SCRIPT = r"""
import importlib.abc
import json
import sys


class BlockSegformer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "segformer" or name.startswith("segformer."):
            raise ImportError(f"{name} is blocked: this process must work without the package")


sys.meta_path.insert(0, BlockSegformer())
try:
    import segformer  # noqa: F401
    blocked = False
except ImportError:
    blocked = True

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSemanticSegmentation, pipeline

folder, inputs_path, image_path, outputs_path = sys.argv[1:]
model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
torch.set_num_threads(1)  # one thread: bitwise reproducible, whatever the load on the machine
with torch.no_grad():
    logits = model(load_file(inputs_path)["pixel_values"]).logits
segments = pipeline("image-segmentation", model=folder, trust_remote_code=True)(Image.open(image_path))
masks = {f"mask_{i}": torch.from_numpy(np.array(s["mask"])) for i, s in enumerate(segments)}
save_file({"logits": logits.contiguous(), **masks}, outputs_path)  # logits are channels-last
print(json.dumps({
    "blocked": blocked,
    "segformer_loaded": any(name.split(".")[0] == "segformer" for name in sys.modules),
    "model_module": type(model).__module__,
    "labels": [s["label"] for s in segments],
    "mask_types": [type(s["mask"]).__name__ for s in segments],
}))
"""


@pytest.fixture(scope="module")
def remote_code_run(tmp_path_factory, tiny_config):
    """Save a tiny model, then load and run it in a subprocess that cannot import `segformer`."""
    tmp_path = tmp_path_factory.mktemp("remote_code")
    torch.manual_seed(0)
    config = tiny_config(id2label=LABELS, label2id={name: i for i, name in LABELS.items()})
    model = SegFormerForSemanticSegmentation(config).eval()
    # Running stats away from 0/1, so that the copy has to carry the buffers too.
    model.decode_head.linear_fuse.bn.running_mean.normal_(0.0, 0.5)
    model.decode_head.linear_fuse.bn.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(tmp_path / "model")
    pixel_values = torch.randn(2, 3, 45, 61)
    save_file({"pixel_values": pixel_values}, tmp_path / "inputs.safetensors")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8))
    image.save(tmp_path / "image.png")
    # Offline, and the copied code goes to a private module cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(tmp_path / "model"), str(tmp_path / "inputs.safetensors"),
         str(tmp_path / "image.png"), str(tmp_path / "outputs.safetensors")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return model, pixel_values, image, report, load_file(tmp_path / "outputs.safetensors")


@pytest.mark.slow
def test_subprocess_cannot_import_the_package(remote_code_run):
    _, _, _, report, _ = remote_code_run
    assert report["blocked"] and not report["segformer_loaded"]
    assert report["model_module"].startswith("transformers_modules.")


@pytest.fixture
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_remote_code_gives_identical_logits(remote_code_run, single_thread):
    model, pixel_values, _, _, outputs = remote_code_run
    with torch.no_grad():
        expected = model(pixel_values).logits
    difference = (outputs["logits"] - expected).abs().max().item()
    assert torch.equal(outputs["logits"], expected), f"max abs difference {difference}"


@pytest.mark.slow
def test_pipeline_returns_the_models_segmentation_as_masks(remote_code_run, single_thread):
    model, _, image, report, outputs = remote_code_run
    assert report["mask_types"] and set(report["mask_types"]) == {"Image"}
    assert set(report["labels"]) <= set(LABELS.values())
    masks = [outputs[f"mask_{i}"].numpy() for i in range(len(report["labels"]))]
    assert all(mask.shape == (image.height, image.width) for mask in masks)
    # The masks partition the image ...
    assert (sum(mask.astype(int) for mask in masks) == 255).all()
    # ... exactly as `segformer predict` segments the image with the saved processor's protocol.
    label_map = segment_images(model, SegFormerImageProcessor(), [image])[0]
    for label, mask in zip(report["labels"], masks):
        label_id = model.config.label2id[label]
        assert np.array_equal(mask == 255, label_map == label_id), label
