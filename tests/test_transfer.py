"""The loop from pretraining to segmentation: `segformer train --model` on a classification checkpoint (or an
encoder alone) takes its encoder whole with a new decode head, and `segformer convert --to nvlabs-mit`
writes an encoder as NVlabs' `mit_bX.pth`, which converts back to the same tensors and logits."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TRAINABLE_CONFIG
from segformer import (
    SegFormerConfig,
    SegFormerForImageClassification,
    SegFormerForSemanticSegmentation,
    SegFormerModel,
    data,
    train,
)
from segformer.cli import main as cli
from segformer.conversion import convert, export_to_nvlabs
from segformer.errors import InputError
from segformer.train.model import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"
# ImageNet-like class names of the classification checkpoints here: none of them is a segmentation class.
CLASSES = {index: f"class_{index}" for index in range(7)}


def classification_folder(folder, seed: int = 0, **config) -> str:
    """A random `SegFormerForImageClassification` saved as `segformer pretrain` saves it."""
    torch.manual_seed(seed)
    fields = {**TRAINABLE_CONFIG, **config}
    label2id = {name: index for index, name in CLASSES.items()}
    model = SegFormerForImageClassification(SegFormerConfig(**fields, id2label=CLASSES, label2id=label2id))
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> str:
    return classification_folder(tmp_path_factory.mktemp("cls") / "model", drop_path_rate=0.2)


def assert_same_tensors(expected: dict, actual: dict):
    assert sorted(expected) == sorted(actual)
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, different


def encoder_of(folder) -> dict:
    return SegFormerForImageClassification.from_pretrained(folder).segformer.state_dict()


def test_a_classification_checkpoint_gives_its_encoder_whole_and_a_new_decode_head(classifier, capsys):
    options = train.parse_options(["--model", classifier])
    model = build_model(options, data.BUILTIN_ID2LABEL)
    assert_same_tensors(encoder_of(classifier), model.segformer.state_dict())
    assert not hasattr(model, "classifier")
    assert model.config.architectures == ["SegFormerForSemanticSegmentation"]
    assert model.config.id2label == data.BUILTIN_ID2LABEL
    assert model.decode_head.linear_pred.out_channels == len(data.BUILTIN_ID2LABEL)
    # The encoder's hyper-parameters are the checkpoint's, its stochastic depth included.
    assert model.config.hidden_sizes == TRAINABLE_CONFIG["hidden_sizes"] and model.config.drop_path_rate == 0.2
    # The new head is initialised as a model built from scratch initialises it, not left as allocated.
    head = model.decode_head
    assert 0.005 < head.linear_pred.weight.std() < 0.015 and not head.linear_pred.bias.any()
    assert torch.equal(head.linear_fuse.bn.weight, torch.ones_like(head.linear_fuse.bn.weight))
    assert torch.equal(head.linear_fuse.bn.running_var, torch.ones_like(head.linear_fuse.bn.running_var))
    for layer in head.linear_c:
        assert 0.01 < layer.weight.std() < 0.03 and not layer.bias.any()
    output = capsys.readouterr().out
    assert f"encoder from {classifier} (image classification), new decode head for 4 labels" in output, output
    assert "the classifier dropped" in output


def test_the_users_drop_path_and_loss_apply_to_the_checkpoints_encoder(classifier):
    options = train.parse_options(["--model", classifier, "--drop-path", "0.05", "--loss", "focal"])
    model = build_model(options, data.BUILTIN_ID2LABEL)
    assert model.config.drop_path_rate == 0.05 and model.config.loss_type == "focal"
    last = model.segformer.stages[-1].blocks[-1].drop_path
    assert last.drop_prob == pytest.approx(0.05)
    assert_same_tensors(encoder_of(classifier), model.segformer.state_dict())


def test_a_b1_classification_checkpoint_gives_a_b1(tmp_path, capsys):
    config = SegFormerConfig.from_variant("b1", num_labels=3)
    SegFormerForImageClassification(config).save_pretrained(tmp_path / "b1")
    model = build_model(train.parse_options(["--model", str(tmp_path / "b1")]), data.BUILTIN_ID2LABEL)
    reference = SegFormerConfig.from_variant("b1")
    for name in ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "decoder_hidden_size"):
        assert getattr(model.config, name) == getattr(reference, name), name
    assert "SegFormer-B1 encoder from" in capsys.readouterr().out


def test_an_encoder_alone_and_a_transformers_imagenet_checkpoint_give_their_encoders(tmp_path, capsys):
    torch.manual_seed(0)
    SegFormerModel(SegFormerConfig(**TRAINABLE_CONFIG)).save_pretrained(tmp_path / "encoder")
    model = build_model(train.parse_options(["--model", str(tmp_path / "encoder")]), data.BUILTIN_ID2LABEL)
    assert_same_tensors(SegFormerModel.from_pretrained(tmp_path / "encoder").state_dict(), model.segformer.state_dict())
    assert "(encoder only), new decode head for 4 labels" in capsys.readouterr().out
    # transformers' layout of nvidia/mit-b0 (a tiny one), converted on the fly.
    mit = str(FIXTURES / "tf4-mit")
    model = build_model(train.parse_options(["--model", mit]), data.BUILTIN_ID2LABEL)
    converted = convert(mit, check=False).model
    assert isinstance(converted, SegFormerForImageClassification)
    assert_same_tensors(converted.segformer.state_dict(), model.segformer.state_dict())
    assert "(image classification), new decode head" in capsys.readouterr().out


def damage(folder, how: str):
    """Remove an encoder tensor from the checkpoint, add one, or change one's shape."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    key = "segformer.stages.1.blocks.0.attn.q.weight"
    if how == "missing":
        del tensors[key]
    elif how == "unexpected":
        tensors["segformer.stages.1.blocks.0.attn.extra.weight"] = tensors[key].clone()
    else:
        tensors[key] = tensors[key][:, :-1].contiguous()
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("how", ["missing", "unexpected", "mismatched"])
def test_an_encoder_tensor_that_does_not_load_is_an_error_not_a_new_weight(tmp_path, how):
    folder = tmp_path / "cls"
    classification_folder(folder)
    damage(folder, how)
    with pytest.raises(InputError, match=f"its encoder does not fit.*{how}: segformer.stages.1.blocks.0.attn"):
        build_model(train.parse_options(["--model", str(folder)]), data.BUILTIN_ID2LABEL)


def tiny_run(model: str, output_dir, *extra) -> list:
    """`segformer train` on the built-in data, shrunk to a few seconds (as tests/test_train.py's runs)."""
    return [
        "train", "--model", model, "--output-dir", str(output_dir), "--crop-size", "48", "48", "--scale", "48", "48",
        "--max-train-samples", "16", "--max-eval-samples", "4", "--batch-size", "4", "--eval-batch-size", "4",
        "--report-to", "none", "--num-overlays", "0", "--warmup-steps", "1", "--max-steps", "3", *extra,
    ]  # fmt: skip


def test_segformer_train_fine_tunes_a_classification_checkpoint(classifier, tmp_path, capsys):
    cli(tiny_run(classifier, tmp_path / "run"))
    output = capsys.readouterr().out
    assert "encoder from" in output and "(image classification), new decode head for 4 labels" in output
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["step"] == 3 and 0.0 <= results["eval_mean_iou"] <= 1.0
    trained = SegFormerForSemanticSegmentation.from_pretrained(tmp_path / "run" / "model")
    assert trained.config.architectures == ["SegFormerForSemanticSegmentation"]
    assert trained.config.id2label == data.BUILTIN_ID2LABEL
    # Trained from the checkpoint's encoder: three small steps move it, but it stays near it.
    pretrained = encoder_of(classifier)
    for key, tensor in trained.segformer.state_dict().items():
        if tensor.is_floating_point() and tensor.numel() > 1:
            assert (tensor - pretrained[key]).abs().max() < 0.05, key
    assert not torch.equal(trained.segformer.stages[0].patch_embed.proj.weight, pretrained["stages.0.patch_embed.proj.weight"])


def run(argv: list, capsys) -> tuple:
    """(exit status, stderr) of `segformer ARGV` that fails."""
    with pytest.raises(SystemExit) as exited:
        cli(argv)
    return exited.value.code, capsys.readouterr().err


def assert_one_error_line(status, stderr: str, command: str, names: str):
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and lines[-1].startswith(f"segformer {command}: error:"), stderr
    assert sum(line.startswith(f"segformer {command}: error:") for line in lines) == 1, stderr
    assert names in lines[-1], lines[-1]


def nvlabs_keys(config: SegFormerConfig, head: bool) -> set:
    """The state dict keys of NVlabs' MixVisionTransformer (mix_transformer.py) of this architecture, as its
    modules name them: patch_embed{n}, block{n}.{j} (attention q, kv, proj, and sr + norm where the stage
    reduces), norm{n}, and the ImageNet classifier `head`."""
    modules = []
    for n, (depth, reduction) in enumerate(zip(config.depths, config.sr_ratios), start=1):
        modules += [f"patch_embed{n}.proj", f"patch_embed{n}.norm", f"norm{n}"]
        for j in range(depth):
            attention = ["q", "kv", "proj"] + (["sr", "norm"] if reduction > 1 else [])
            modules += [f"block{n}.{j}.{name}" for name in ("norm1", "norm2", "mlp.fc1", "mlp.dwconv.dwconv", "mlp.fc2")]
            modules += [f"block{n}.{j}.attn.{name}" for name in attention]
    modules += ["head"] if head else []
    return {f"{module}.{param}" for module in modules for param in ("weight", "bias")}


def test_a_b0_classifier_exports_as_nvlabs_mit_b0_pth(tmp_path, capsys):
    torch.manual_seed(0)
    config = SegFormerConfig.from_variant("b0", num_labels=1000)
    SegFormerForImageClassification(config).save_pretrained(tmp_path / "b0")
    cli(["convert", str(tmp_path / "b0"), "--to", "nvlabs-mit", "--output-dir", str(tmp_path / "out")])
    assert "Wrote the encoder and classifier" in capsys.readouterr().out
    tensors = torch.load(tmp_path / "out" / "mit_b0.pth", weights_only=True)
    assert set(tensors) == nvlabs_keys(config, head=True)
    assert all(isinstance(tensor, torch.Tensor) for tensor in tensors.values())
    # NVlabs' shapes: one kv projection of keys then values, the head on the last stage's 256 channels.
    assert tensors["block1.0.attn.kv.weight"].shape == (64, 32) and tensors["head.weight"].shape == (1000, 256)
    # The released MiT-B0 encoder's parameter count (README), plus the ImageNet head.
    assert sum(tensor.numel() for tensor in tensors.values()) == 3_319_392 + 256 * 1000 + 1000


@pytest.mark.parametrize("architecture", [SegFormerForImageClassification, SegFormerForSemanticSegmentation])
def test_the_nvlabs_file_converts_back_to_the_same_tensors_and_outputs(architecture, tmp_path, capsys):
    torch.manual_seed(0)
    config = SegFormerConfig(**TRAINABLE_CONFIG, num_labels=7, layer_norm_eps=1e-5)
    model = architecture(config).eval()
    with torch.no_grad():  # non-trivial norms, so that a norm exported in another one's place shows
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(tmp_path / "model")
    cli(["convert", str(tmp_path / "model"), "--to", "nvlabs-mit", "--output-dir", str(tmp_path / "out")])
    assert "read back: same tensors" in capsys.readouterr().out
    path = tmp_path / "out" / "mit.pth"  # not a released variant
    head = architecture is SegFormerForImageClassification
    assert set(torch.load(path, weights_only=True)) == nvlabs_keys(config, head=head)
    # Back through the package's NVlabs import, as a user of `segformer convert mit_bX.pth` would.
    cli(["convert", str(path), "--output-dir", str(tmp_path / "back"), "--num-heads", "1", "1", "1", "2",
         "--layer-norm-eps", "1e-5"])  # fmt: skip
    back_class = SegFormerForImageClassification if head else SegFormerModel
    back = back_class.from_pretrained(tmp_path / "back").eval()
    encoder = model if head else model.segformer
    assert_same_tensors(encoder.state_dict(), back.state_dict())
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        if head:
            difference = (model(pixel_values).logits - back(pixel_values).logits).abs().max()
        else:
            ours = model.segformer(pixel_values, output_hidden_states=True).hidden_states
            theirs = back(pixel_values, output_hidden_states=True).hidden_states
            difference = max((a - b).abs().max() for a, b in zip(ours, theirs))
    assert difference <= 1e-6


def test_the_nvlabs_layout_is_the_one_mmsegmentation_reads(tmp_path):
    """mit-nvlabs.pth is the mmseg fixture's encoder in NVlabs' layout: mmseg's own reader of that layout
    (mit2mmseg's `convert_mit`) turns it into the fixture checkpoint's backbone exactly
    (scripts/make_nvlabs_mit_fixture.py), and that checkpoint converts to mmseg's logits (test_mmseg.py)."""
    mmseg = FIXTURES / "mmseg-segformer"
    reference = convert(mmseg / "model-1.x.pth", encoder_only=True, check=False).model
    config = reference.config
    imported = convert(mmseg / "mit-nvlabs.pth", check=False, num_attention_heads=config.num_attention_heads).model
    assert isinstance(imported, SegFormerModel)
    assert_same_tensors(reference.state_dict(), imported.state_dict())
    path, difference = export_to_nvlabs(reference, tmp_path)
    assert_same_tensors(torch.load(mmseg / "mit-nvlabs.pth", weights_only=True), torch.load(path, weights_only=True))
    assert difference <= 1e-6


def test_bad_exports_end_in_one_error_line(classifier, tmp_path, capsys):
    out = str(tmp_path / "out")
    status, stderr = run(["convert", classifier, "--to", "nvlabs", "--output-dir", out], capsys)
    assert_one_error_line(status, stderr, "convert", "--to")
    status, stderr = run(["convert", classifier, "--to", "nvlabs-mit", "--output-dir", out, "--push-to-hub", "a/b"], capsys)
    assert_one_error_line(status, stderr, "convert", "--push-to-hub")
    # Not a SegFormer: a folder of another model.
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(4, 2)}, other / "model.safetensors")
    status, stderr = run(["convert", str(other), "--to", "nvlabs-mit", "--output-dir", out], capsys)
    assert_one_error_line(status, stderr, "convert", "not those of any SegFormer layout")
    # An encoder NVlabs' code cannot build.
    odd = classification_folder(tmp_path / "odd", patch_sizes=[5, 3, 3, 3])
    status, stderr = run(["convert", odd, "--to", "nvlabs-mit", "--output-dir", out], capsys)
    assert_one_error_line(status, stderr, "convert", "patch_sizes")
    status, stderr = run(["train", "--drop-path", "1.5"], capsys)
    assert_one_error_line(status, stderr, "train", "--drop-path")


def test_the_benchmark_table_pairs_the_seeds_and_gives_each_arms_spread():
    from benchmarks.pretraining_benefit import summary_table

    table = summary_table({"scratch": {0: 0.60, 1: 0.64, 2: 0.62}, "pretrained": {2: 0.70, 0: 0.66, 1: 0.71}})
    lines = table.splitlines()
    assert lines[2] == "| 0 | 0.600 | 0.660 | +0.060 |" and lines[4] == "| 2 | 0.620 | 0.700 | +0.080 |"
    # Sample standard deviations: scratch 0.02; pretrained 0.0265; differences 0.06, 0.07, 0.08 -> 0.01.
    assert lines[-1] == "| mean ± std | 0.620 ± 0.020 | 0.690 ± 0.026 | +0.070 ± 0.010 |"
    with pytest.raises(ValueError, match="different seeds"):
        summary_table({"scratch": {0: 0.6}, "pretrained": {1: 0.7}})
