"""Conversion from every checkpoint layout, proven by logits against real reference code.

Sources: the committed transformers-4.x fixture (made by scripts/make_tf4_fixture.py with transformers
4.46.3, with its logits); random transformers-5.x models built here; NVlabs and mmsegmentation state
dicts assembled from those transformers models under the published key names and shapes.
"""

import importlib.util
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file

from segformer import SegFormerForImageClassification, SegFormerForSemanticSegmentation, SegFormerModel
from segformer.cli import main as cli_main
from segformer.conversion import ConversionError, convert, export_to_transformers
from segformer.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = load_file(FIXTURES / "tf4_reference.safetensors")
PIXELS = REFERENCE["pixel_values"]  # (1, 3, 32, 48)
TRANSFORMERS_EPS = dict(layer_norm_eps=1e-5, patch_layer_norm_eps=1e-5)


def _load_fixture_script():
    spec = importlib.util.spec_from_file_location("make_tf4_fixture", FIXTURES.parents[1] / "scripts/make_tf4_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIXTURE_SCRIPT = _load_fixture_script()


def transformers_model(model_class, num_labels=19, seed=0):
    """A random transformers 5.x SegFormer of the fixture's tiny shape, every tensor randomised."""
    config = transformers.SegformerConfig(**FIXTURE_SCRIPT.TINY, num_labels=num_labels)
    return FIXTURE_SCRIPT.build(model_class, config, seed)


def output(model, pixel_values=PIXELS):
    with torch.no_grad():
        outputs = model(pixel_values)
    return outputs.logits if hasattr(outputs, "logits") else outputs.last_hidden_state


def max_difference(ours, reference):
    return (output(ours) - output(reference)).abs().max().item()


# NVlabs/SegFormer names: the published `mix_transformer.py` / `segformer_head.py`, from transformers 5.x's.
NVLABS_PATCH = {"patch_embeddings.proj": "proj", "patch_embeddings.layer_norm": "norm"}
NVLABS_BLOCK = {
    "layernorm_before": "norm1", "attention.q_proj": "attn.q", "attention.sequence_reduction.sequence_reduction": "attn.sr",
    "attention.sequence_reduction.layer_norm": "attn.norm", "attention.o_proj": "attn.proj", "layernorm_after": "norm2",
    "mlp.fc1": "mlp.fc1", "mlp.dwconv.dwconv": "mlp.dwconv.dwconv", "mlp.fc2": "mlp.fc2",
}  # fmt: skip


def nvlabs_state_dict(hf_model, prefix="backbone."):
    hf = hf_model.state_dict()
    state_dict = {}
    for key, tensor in hf.items():
        if match := re.fullmatch(r"segformer\.stages\.(\d)\.(patch_embeddings\.\w+)\.(\w+)", key):
            state_dict[f"{prefix}patch_embed{int(match[1]) + 1}.{NVLABS_PATCH[match[2]]}.{match[3]}"] = tensor
        elif match := re.fullmatch(r"segformer\.stages\.(\d)\.blocks\.(\d)\.(.+)\.(\w+)", key):
            stage, block, module, param = int(match[1]) + 1, match[2], match[3], match[4]
            if module == "attention.k_proj":  # the original's one kv projection: keys, then values
                value = hf[key.replace("k_proj", "v_proj")]
                state_dict[f"{prefix}block{stage}.{block}.attn.kv.{param}"] = torch.cat([tensor, value])
            elif module != "attention.v_proj":
                state_dict[f"{prefix}block{stage}.{block}.{NVLABS_BLOCK[module]}.{param}"] = tensor
        elif match := re.fullmatch(r"segformer\.stages\.(\d)\.layer_norm\.(\w+)", key):
            state_dict[f"{prefix}norm{int(match[1]) + 1}.{match[2]}"] = tensor
        elif match := re.fullmatch(r"decode_head\.linear_projections\.(\d)\.proj\.(\w+)", key):
            state_dict[f"decode_head.linear_c{int(match[1]) + 1}.proj.{match[2]}"] = tensor
        else:
            renamed = {"decode_head.linear_fuse": "decode_head.linear_fuse.conv", "decode_head.batch_norm":
                       "decode_head.linear_fuse.bn", "decode_head.classifier": "decode_head.linear_pred", "classifier": "head"}  # fmt: skip
            module, param = key.rsplit(".", 1)
            state_dict[f"{renamed[module]}.{param}"] = tensor
    if "decode_head.linear_pred.weight" in state_dict:  # mmseg's BaseDecodeHead makes it, SegFormerHead ignores it
        state_dict["decode_head.conv_seg.weight"] = torch.randn_like(state_dict["decode_head.linear_pred.weight"])
        state_dict["decode_head.conv_seg.bias"] = torch.randn_like(state_dict["decode_head.linear_pred.bias"])
    return state_dict


def mmseg_state_dict(hf_model):
    """mmsegmentation 1.x MixVisionTransformer keys (as mmseg's mit2mmseg.py writes them) under `backbone.`."""
    state_dict = {}
    for key, tensor in nvlabs_state_dict(hf_model, prefix="").items():
        if match := re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(\w+)", key):
            name = {"proj": "projection", "norm": "norm"}[match[2]]
            state_dict[f"backbone.layers.{int(match[1]) - 1}.0.{name}.{match[3]}"] = tensor
        elif match := re.fullmatch(r"block(\d)\.(\d)\.(.+)\.(\w+)", key):
            layer, block, module, param = int(match[1]) - 1, match[2], match[3], match[4]
            base = f"backbone.layers.{layer}.1.{block}"
            if module == "attn.q":
                kv = nvlabs_state_dict(hf_model, prefix="")[key.replace("attn.q", "attn.kv")]
                state_dict[f"{base}.attn.attn.in_proj_{param}"] = torch.cat([tensor, kv])
            elif module == "attn.proj":
                state_dict[f"{base}.attn.attn.out_proj.{param}"] = tensor
            elif module in ("mlp.fc1", "mlp.fc2"):  # 1x1 convolutions in mmseg
                index = {"mlp.fc1": 0, "mlp.fc2": 4}[module]
                state_dict[f"{base}.ffn.layers.{index}.{param}"] = tensor[..., None, None] if param == "weight" else tensor
            elif module == "mlp.dwconv.dwconv":
                state_dict[f"{base}.ffn.layers.1.{param}"] = tensor
            elif module != "attn.kv":
                state_dict[f"{base}.{module}.{param}"] = tensor
        elif match := re.fullmatch(r"norm(\d)\.(\w+)", key):
            state_dict[f"backbone.layers.{int(match[1]) - 1}.2.{match[2]}"] = tensor
    # A piece of mmseg's SegformerHead: the full head converts (tests/test_mmseg.py), a partial one cannot.
    state_dict["decode_head.convs.0.conv.weight"] = torch.randn(16, 4, 1, 1)
    return state_dict


@pytest.fixture
def original_pth(tmp_path):
    """An NVlabs ADE20K-style checkpoint (mmcv wrapper with meta['CLASSES']) and its transformers twin."""
    hf_model = transformers_model(transformers.SegformerForSemanticSegmentation, num_labels=150)
    path = tmp_path / "segformer.b0.512x512.ade.160k.pth"
    classes = tuple(f"class{i}" for i in range(150))
    torch.save({"meta": {"CLASSES": classes}, "state_dict": nvlabs_state_dict(hf_model)}, path)
    return path, hf_model


@pytest.mark.parametrize(
    "name, model_class", [("tf4-segformer-ade", SegFormerForSemanticSegmentation), ("tf4-mit", SegFormerForImageClassification)]
)
def test_transformers4_fixture_matches_its_logits(name, model_class):
    conversion = convert(FIXTURES / name)
    assert type(conversion.model) is model_class and conversion.layout.name == "hf4"
    assert conversion.model.config.mlp_ratios == [4, 4, 2, 2]  # read off the tensors
    # Against the logits transformers 4.46 computed, and against transformers 5.x run by the check.
    assert (output(conversion.model) - REFERENCE[f"{name}.logits"]).abs().max() < 1e-5
    assert conversion.max_abs_diff < 1e-5


def test_ade20k_source_keeps_its_processor():
    processor = convert(FIXTURES / "tf4-segformer-ade").processor
    # transformers' 512x512 processor config read as the paper's ADE20K protocol: short side 512.
    assert processor.do_reduce_labels and processor.short_side == 512


@pytest.mark.parametrize(
    "hf_class, our_class",
    [
        (transformers.SegformerForSemanticSegmentation, SegFormerForSemanticSegmentation),
        (transformers.SegformerForImageClassification, SegFormerForImageClassification),
        (transformers.SegformerModel, SegFormerModel),
    ],
)
def test_transformers5_layout(tmp_path, hf_class, our_class):
    hf_model = transformers_model(hf_class)
    # transformers 5.x `save_pretrained` writes the 4.x keys; the 5.x layout is its in-memory state dict.
    save_file(hf_model.state_dict(), tmp_path / "model.safetensors", metadata={"format": "pt"})
    hf_model.config.save_pretrained(tmp_path)
    conversion = convert(tmp_path)
    assert type(conversion.model) is our_class and conversion.layout.name == "hf5"
    assert conversion.max_abs_diff < 1e-5
    assert max_difference(conversion.model, hf_model) < 1e-5


def test_cityscapes_processor_from_the_number_of_labels(tmp_path):
    transformers_model(transformers.SegformerForSemanticSegmentation, num_labels=19).save_pretrained(tmp_path)
    processor = convert(tmp_path).processor
    assert processor.short_side == 1024 and not processor.do_reduce_labels


def test_original_segmentation_checkpoint(original_pth, caplog):
    path, hf_model = original_pth
    with caplog.at_level(logging.WARNING):
        conversion = convert(path, **TRANSFORMERS_EPS)
    assert conversion.layout.name == "original" and conversion.max_abs_diff is None  # nothing to run it with
    assert "decode_head.conv_seg.weight" in caplog.text  # dropped, and said so
    assert conversion.model.config.id2label[149] == "class149"
    assert conversion.processor.do_reduce_labels  # "ade" in the file name, and 150 labels
    assert max_difference(conversion.model, hf_model) < 1e-5


def test_original_checkpoint_keeps_the_original_epsilons(original_pth):
    config = convert(original_pth[0]).model.config
    assert (config.layer_norm_eps, config.patch_layer_norm_eps) == (1e-6, 1e-5)


def test_original_imagenet_encoder(tmp_path):
    hf_model = transformers_model(transformers.SegformerForImageClassification, num_labels=1000)
    path = tmp_path / "mit_b0.pth"
    torch.save(nvlabs_state_dict(hf_model, prefix=""), path)
    conversion = convert(path, format="original", **TRANSFORMERS_EPS)
    assert type(conversion.model) is SegFormerForImageClassification
    assert max_difference(conversion.model, hf_model) < 1e-5


def test_mmseg_encoder(tmp_path, caplog):
    hf_model = transformers_model(transformers.SegformerForSemanticSegmentation)
    path = tmp_path / "segformer_mit-b0_8xb2-160k_ade20k-512x512.pth"
    torch.save({"meta": {}, "state_dict": mmseg_state_dict(hf_model)}, path)
    with pytest.raises(ConversionError, match="decode head is incomplete.*--encoder-only"):
        convert(path)
    with caplog.at_level(logging.WARNING):
        conversion = convert(path, encoder_only=True, **TRANSFORMERS_EPS)
    assert type(conversion.model) is SegFormerModel and conversion.layout.name == "mmseg"
    assert "--encoder-only: dropped" in caplog.text and "decode_head.convs.0.conv.weight" in caplog.text
    assert max_difference(conversion.model, hf_model.segformer) < 1e-5
    assert convert(path, encoder_only=True).model.config.patch_layer_norm_eps == 1e-6  # mmseg's own eps by default


def test_round_trip_original_to_transformers_and_back(original_pth, tmp_path):
    ours = convert(original_pth[0]).model  # original epsilons: 1e-6 in the blocks
    difference = export_to_transformers(ours, tmp_path / "exported")
    assert 0 < difference < 1e-3  # transformers runs its LayerNorms at 1e-5
    back = SegFormerForSemanticSegmentation.from_pretrained(tmp_path / "exported")
    assert torch.equal(output(back), output(ours))


@pytest.mark.parametrize("layout", ["5", "4"])
@pytest.mark.parametrize(
    "model_class", [SegFormerForSemanticSegmentation, SegFormerForImageClassification, SegFormerModel]
)
def test_export_loads_in_stock_transformers(tmp_path, tiny_config, model_class, layout):
    model = model_class(tiny_config(**TRANSFORMERS_EPS)).eval()
    export_to_transformers(model, tmp_path, layout=layout, check=False)
    hf_class = getattr(transformers, model_class.__name__.replace("SegFormer", "Segformer"))
    hf_model, info = hf_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert max_difference(model, hf_model.eval()) < 1e-5


def test_from_pretrained_converts_a_transformers_folder_on_the_fly(caplog):
    with caplog.at_level(logging.WARNING):
        model = SegFormerForSemanticSegmentation.from_pretrained(FIXTURES / "tf4-segformer-ade")
    assert "on the fly" in caplog.text
    assert (output(model) - REFERENCE["tf4-segformer-ade.logits"]).abs().max() < 1e-5


def test_from_pretrained_downloads_a_hub_repo_and_converts_it(tmp_path):
    # The Hub cache layout that `hf_hub_download` reads: the real download code path, offline.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--nvidia--tiny-mit"
    shutil.copytree(FIXTURES / "tf4-mit", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    # An ImageNet encoder into a segmentation model: a new decode head, as transformers does it.
    model = SegFormerForSemanticSegmentation.from_pretrained(
        "nvidia/tiny-mit", cache_dir=tmp_path / "cache", local_files_only=True, num_labels=3
    )
    encoder = SegFormerForImageClassification.from_pretrained(
        "nvidia/tiny-mit", cache_dir=tmp_path / "cache", local_files_only=True
    )
    assert model.config.num_labels == 3 and model.name_or_path == "nvidia/tiny-mit"
    assert (output(encoder) - REFERENCE["tf4-mit.logits"]).abs().max() < 1e-5
    assert torch.equal(model.segformer.stages[3].norm.weight, encoder.segformer.stages[3].norm.weight)


def test_command_line_writes_a_hub_ready_folder(original_pth, tmp_path):
    out = tmp_path / "converted"
    cli_main(["convert", str(original_pth[0]), "--output-dir", str(out), "--num-heads", "1", "2", "5", "8"])
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert "auto_map" in (out / "config.json").read_text()
    assert "license: other" in (out / "README.md").read_text()  # NVIDIA's weights
    reloaded = SegFormerForSemanticSegmentation.from_pretrained(out)
    converted = convert(original_pth[0]).model
    assert all(torch.equal(tensor, converted.state_dict()[key]) for key, tensor in reloaded.state_dict().items())
    # Memory-mapped weights can be laid out differently, which changes the float rounding of the kernels.
    assert max_difference(reloaded, converted) < 1e-5


def test_command_line_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        cli_main(["convert", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--output-dir", "--format", "--variant", "--check", "--no-check", "--tolerance", "--to", "--push-to-hub",
                   "--private", "--revision", "--token"):
        assert option in help_text


# -- bad input: each fails with a message that names the problem ------------------------------------------


def _save(path, state_dict):
    torch.save({"state_dict": state_dict}, path)
    return path


class NotATensor:
    pass


def _missing_tensor(path, state_dict):
    del state_dict["backbone.block2.1.attn.kv.weight"]
    return _save(path, state_dict)


def _extra_tensor(path, state_dict):
    state_dict["backbone.extra_module.weight"] = torch.zeros(1)
    return _save(path, state_dict)


def _truncated(path, state_dict):
    _save(path, state_dict)
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _pickled_code(path, state_dict):
    torch.save({"state_dict": state_dict, "extra": NotATensor()}, path)
    return path


def _not_segformer(path, state_dict):
    return _save(path, {"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)})


def _garbage_safetensors(path, state_dict):
    path = path.with_suffix(".safetensors")
    path.write_bytes(b"\x00\x01 definitely not safetensors")
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (_missing_tensor, r"missing: segformer\.stages\.1\.blocks\.1\.attn\.kv\.weight"),
        (_extra_tensor, r"no place in the model: extra_module\.weight"),
        (_truncated, r"truncated, corrupt"),
        (_pickled_code, r"needs to run pickled code"),
        (_not_segformer, r"not those of any SegFormer layout"),
        (_garbage_safetensors, r"not a readable safetensors file"),
    ],
)
def test_bad_files_fail_clearly(original_pth, tmp_path, damage, message):
    path, hf_model = original_pth
    broken = damage(tmp_path / "broken.pth", nvlabs_state_dict(hf_model))
    with pytest.raises(ConversionError, match=message):
        convert(broken)


def test_checkpoints_are_told_by_their_content_not_their_name(tmp_path):
    """An older (pickle) `torch.save` file, and safetensors without its suffix, convert as the usual ones."""
    hf_model = transformers_model(transformers.SegformerForImageClassification, num_labels=1000)
    state_dict = nvlabs_state_dict(hf_model, prefix="")
    torch.save(state_dict, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(state_dict, tmp_path / "weights")
    for name in ("legacy.pth", "weights"):
        conversion = convert(tmp_path / name, format="original", **TRANSFORMERS_EPS)
        assert max_difference(conversion.model, hf_model) < 1e-5, name


@pytest.mark.parametrize(
    "write, looks_like",
    [
        (lambda path: Image.new("RGB", (64, 48)).save(path, "JPEG"), "a JPEG image (64x48)"),
        (lambda path: path.write_text("learning_rate: 0.01\n"), "a text file"),
        (lambda path: path.write_bytes(b""), "an empty file"),
        (lambda path: path.write_bytes(bytes(range(256))), "a file of an unknown format"),
    ],
)
def test_a_file_that_is_no_checkpoint_says_what_it_looks_like(tmp_path, write, looks_like):
    path = tmp_path / "photo.jpg"
    write(path)
    with pytest.raises(InputError, match=re.escape(f"photo.jpg is not a checkpoint: it looks like {looks_like}.")):
        convert(path)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(format="hf"), r"--format hf was given but the keys are those of NVlabs"),
        (dict(variant="b2"), r"not MiT-B2: its tensors have hidden_sizes=\[4, 8, 20, 32\]"),
        (dict(check=True), r"Cannot check the conversion"),
        (dict(num_attention_heads=[1, 2, 3, 4]), r"not divisible"),
    ],
)
def test_wrong_options_fail_clearly(original_pth, options, message):
    with pytest.raises(ConversionError, match=message):
        convert(original_pth[0], **options)


def test_check_fails_above_the_tolerance():
    # A LayerNorm eps far from transformers' 1e-5 changes the logits: the check must notice.
    with pytest.raises(ConversionError, match=r"does not compute what transformers"):
        convert(FIXTURES / "tf4-segformer-ade", layer_norm_eps=1e-1)


def test_command_line_pushes_the_folder_to_the_hub(original_pth, tmp_path, hub_repo_id):
    from huggingface_hub import HfApi

    cli_main(["convert", str(original_pth[0]), "--output-dir", str(tmp_path / "converted"), "--push-to-hub", hub_repo_id])
    files = set(HfApi().list_repo_files(hub_repo_id))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_segformer.py"} <= files
