"""The SegFormer model classes: parity with transformers' SegFormer, invariants, losses, init, bad input."""

import importlib.util
import inspect
import math
import re
import sys

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

import segformer.modeling_segformer
from segformer import (
    SegFormerBackbone,
    SegFormerForImageClassification,
    SegFormerForSemanticSegmentation,
    SegFormerModel,
)
from segformer.loss_segformer import semantic_segmentation_loss

MODEL_CLASSES = [SegFormerModel, SegFormerForSemanticSegmentation, SegFormerForImageClassification, SegFormerBackbone]
# Square, odd and non-square sizes that are not multiples of 32 (the smallest the tiny config takes is 29).
INPUT_SIZES = [(32, 32), (45, 61), (67, 40)]
STAGE_STRIDES = [4, 8, 16, 32]


def make_labels(model_class, config, batch: int, height: int, width: int):
    if model_class is SegFormerForSemanticSegmentation:
        return torch.randint(0, config.num_labels, (batch, height, width))
    if model_class is SegFormerForImageClassification:
        return torch.randint(0, config.num_labels, (batch,))
    return None


def run(model, pixel_values, labels=None, **kwargs):
    return model(pixel_values, **kwargs) if labels is None else model(pixel_values, labels=labels, **kwargs)


def main_outputs(outputs) -> tuple:
    """The tensors each class exists to produce."""
    if "feature_maps" in outputs:
        return outputs.feature_maps
    return (outputs.logits,) if "logits" in outputs else (outputs.last_hidden_state,)


def scalar_objective(outputs) -> torch.Tensor:
    """The loss, or a random projection of the outputs. (A plain sum would be blind to everything
    before a LayerNorm, whose output sums to its bias over the channels.)"""
    if outputs.get("loss") is not None:
        return outputs.loss
    generator = torch.Generator().manual_seed(0)
    return sum((t * torch.randn(t.shape, generator=generator)).sum() for t in main_outputs(outputs))


def randomize_batch_norm(model: nn.Module):
    # Fresh running stats are 0/1, which would hide a mix-up of mean and variance or a missing BN.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.5)
            module.running_var.uniform_(0.5, 2.0)


def ceil_div(size: int, stride: int) -> int:
    return -(-size // stride)


# ---------------------------------------------------------------------------------------------------
# Parity with transformers' SegFormer on the same weights

# transformers 5.x state-dict key (regex) -> ours; applied in order. K and V are fused separately.
TRANSFORMERS_TO_OURS = {
    r"\.patch_embeddings\.proj\.": ".patch_embed.proj.",
    r"\.patch_embeddings\.layer_norm\.": ".patch_embed.norm.",
    r"\.layernorm_before\.": ".norm1.",
    r"\.layernorm_after\.": ".norm2.",
    r"\.attention\.q_proj\.": ".attn.q.",
    r"\.attention\.o_proj\.": ".attn.proj.",
    r"\.attention\.sequence_reduction\.sequence_reduction\.": ".attn.sr.",
    r"\.attention\.sequence_reduction\.layer_norm\.": ".attn.norm.",
    r"\.mlp\.dwconv\.dwconv\.": ".mlp.dwconv.",
    r"^(segformer\.stages\.\d+)\.layer_norm\.": r"\1.norm.",
    r"^decode_head\.linear_projections\.(\d+)\.proj\.": r"decode_head.linear_c.\1.",
    r"^decode_head\.linear_fuse\.": "decode_head.linear_fuse.conv.",
    r"^decode_head\.batch_norm\.": "decode_head.linear_fuse.bn.",
    r"^decode_head\.classifier\.": "decode_head.linear_pred.",
}


def fuse_key_value(state_dict: dict) -> dict:
    # Ours has one K/V projection whose output rows are all keys, then all values.
    for key in [k for k in state_dict if ".attention.k_proj." in k]:
        value_key = key.replace(".k_proj.", ".v_proj.")
        fused_key = key.replace(".attention.k_proj.", ".attn.kv.")
        state_dict[fused_key] = torch.cat([state_dict.pop(key), state_dict.pop(value_key)])
    return state_dict


def convert_transformers_state_dict(state_dict: dict) -> dict:
    converted = {}
    for key, value in state_dict.items():
        for pattern, replacement in TRANSFORMERS_TO_OURS.items():
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return fuse_key_value(converted)


def transformers_twin(config, ours_class, theirs_class):
    """A randomly initialised transformers model of the same shape, its weights copied into ours."""
    theirs_config = transformers.SegformerConfig(
        num_channels=config.num_channels,
        num_encoder_blocks=config.num_stages,
        **{name: getattr(config, name) for name in (
            "depths", "hidden_sizes", "num_attention_heads", "sr_ratios", "patch_sizes", "strides",
            "mlp_ratios", "decoder_hidden_size", "num_labels",
        )},
    )
    theirs = theirs_class(theirs_config).eval()
    with torch.no_grad():
        # Perturb everything (norm weights away from 1, biases away from 0) so each copy matters.
        for parameter in theirs.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    randomize_batch_norm(theirs)
    ours = ours_class(config).eval()
    ours.load_state_dict(convert_transformers_state_dict(theirs.state_dict()), strict=True)
    return ours, theirs


# Max abs differences from transformers that the parity holds (logits of magnitude ~0.5, stage maps ~5):
# float32 rounding, measured 1.0-1.8e-7 on the logits and 1.0-1.4e-6 on the stages over seeds. A real
# slip is far above: a BatchNorm folded with 3x its eps moves the logits by 2.7e-6.
LOGITS_PARITY = 3e-7
STAGE_PARITY = 3e-6


@pytest.mark.parametrize(
    "ours_class, theirs_class",
    [
        (SegFormerForSemanticSegmentation, transformers.SegformerForSemanticSegmentation),
        (SegFormerForImageClassification, transformers.SegformerForImageClassification),
    ],
)
def test_logits_and_stages_match_transformers(tiny_config, ours_class, theirs_class):
    # transformers' SegFormer uses LayerNorm eps 1e-5 everywhere.
    ours, theirs = transformers_twin(tiny_config(layer_norm_eps=1e-5), ours_class, theirs_class)
    pixel_values = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        expected = theirs(pixel_values, output_hidden_states=True)
        actual = ours(pixel_values, output_hidden_states=True)
    assert len(actual.hidden_states) == len(expected.hidden_states) == 4
    for stage, (a, e) in enumerate(zip(actual.hidden_states, expected.hidden_states), start=1):
        assert a.shape == e.shape, f"stage {stage}"
        assert (a - e).abs().max() < STAGE_PARITY, f"stage {stage}"
    assert actual.logits.shape == expected.logits.shape
    assert (actual.logits - expected.logits).abs().max() < LOGITS_PARITY
    if ours_class is SegFormerForSemanticSegmentation:  # the deployment decoder computes the same logits
        with torch.no_grad():
            fused = ours.fuse()(pixel_values).logits
        assert (fused - expected.logits).abs().max() < LOGITS_PARITY


def test_transformers_loss_matches_on_the_same_weights(tiny_config):
    ours, theirs = transformers_twin(tiny_config(layer_norm_eps=1e-5), SegFormerForSemanticSegmentation,
                                     transformers.SegformerForSemanticSegmentation)
    pixel_values = torch.randn(2, 3, 45, 61)
    labels = torch.randint(0, 5, (2, 45, 61))
    labels[:, :10] = 255
    with torch.no_grad():
        assert torch.allclose(ours(pixel_values, labels=labels).loss, theirs(pixel_values, labels=labels).loss, atol=1e-6)


def test_classification_loss_matches_transformers_and_takes_int32_labels(tiny_config):
    ours, theirs = transformers_twin(tiny_config(layer_norm_eps=1e-5), SegFormerForImageClassification,
                                     transformers.SegformerForImageClassification)
    pixel_values = torch.randn(2, 3, 45, 61)
    labels = torch.tensor([3, 0])
    with torch.no_grad():
        expected = theirs(pixel_values, labels=labels).loss
        assert torch.allclose(ours(pixel_values, labels=labels).loss, expected, atol=1e-6)
        assert torch.allclose(ours(pixel_values, labels=labels.int()).loss, expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Shapes

@pytest.mark.parametrize("height, width", INPUT_SIZES)
def test_stage_feature_maps_have_strides_4_8_16_32(tiny_config, height, width):
    config = tiny_config()
    outputs = SegFormerModel(config).eval()(torch.randn(2, 3, height, width), output_hidden_states=True)
    expected = [(2, c, ceil_div(height, s), ceil_div(width, s)) for c, s in zip(config.hidden_sizes, STAGE_STRIDES)]
    assert [tuple(t.shape) for t in outputs.hidden_states] == expected
    assert torch.equal(outputs.last_hidden_state, outputs.hidden_states[-1])


@pytest.mark.parametrize("height, width", INPUT_SIZES)
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_output_shapes(tiny_config, model_class, height, width):
    config = tiny_config()
    outputs = model_class(config).eval()(torch.randn(2, 3, height, width))
    if model_class is SegFormerForSemanticSegmentation:
        # Logits at 1/4 resolution.
        assert outputs.logits.shape == (2, 5, ceil_div(height, 4), ceil_div(width, 4))
    elif model_class is SegFormerForImageClassification:
        assert outputs.logits.shape == (2, 5)
    elif model_class is SegFormerModel:
        assert outputs.last_hidden_state.shape == (2, 32, ceil_div(height, 32), ceil_div(width, 32))
    else:
        assert [t.shape[1:] for t in outputs.feature_maps] == [
            (c, ceil_div(height, s), ceil_div(width, s)) for c, s in zip(config.hidden_sizes, STAGE_STRIDES)
        ]


def test_backbone_exposes_channels_strides_and_selected_stages(tiny_config):
    backbone = SegFormerBackbone(tiny_config(out_features=["stage2", "stage4"])).eval()
    assert (backbone.channels, backbone.strides) == ([16, 32], [8, 32])
    pixel_values = torch.randn(1, 3, 64, 64)
    maps = backbone(pixel_values).feature_maps
    encoder_maps = backbone.segformer(pixel_values, output_hidden_states=True).hidden_states
    assert len(maps) == 2
    assert torch.equal(maps[0], encoder_maps[1]) and torch.equal(maps[1], encoder_maps[3])


@pytest.mark.parametrize(
    "out_features, out_indices, channels",
    [(None, [1, 2, 3, 4], [8, 16, 24, 32]), (["stage2", "stage4"], [2, 4], [16, 32])],
)
def test_backbone_has_the_attributes_of_transformers_backbones(tiny_config, out_features, out_indices, channels):
    backbone = SegFormerBackbone(tiny_config(out_features=out_features))
    stage_names = ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert backbone.stage_names == stage_names
    # The "stem" is the input image: the patch embedding belongs to stage 1.
    assert backbone.num_features == [3, 8, 16, 24, 32]
    assert backbone.out_feature_channels == dict(zip(stage_names, [3, 8, 16, 24, 32]))
    assert backbone.out_features == [stage_names[i] for i in out_indices]
    assert backbone.out_indices == out_indices
    assert backbone.channels == channels
    assert backbone.strides == [STAGE_STRIDES[i - 1] for i in out_indices]


@pytest.mark.parametrize("owner", ["backbone", "config"])
def test_backbone_attributes_follow_a_change_of_out_features(tiny_config, owner):
    backbone = SegFormerBackbone(tiny_config()).eval()
    setattr(backbone if owner == "backbone" else backbone.config, "out_features", ["stage1", "stage3"])
    assert (backbone.out_features, backbone.out_indices) == (["stage1", "stage3"], [1, 3])
    assert (backbone.channels, backbone.strides) == ([8, 24], [4, 16])
    assert [m.shape[1] for m in backbone(torch.randn(1, 3, 64, 64)).feature_maps] == [8, 24]
    backbone.out_indices = [4]
    assert (backbone.config.out_features, backbone.channels) == (["stage4"], [32])


# ---------------------------------------------------------------------------------------------------
# Training invariants

@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_every_parameter_gets_a_gradient(tiny_config, model_class):
    # No dropout, so that no parameter misses its gradient by chance.
    config = tiny_config(drop_path_rate=0.0, classifier_dropout_prob=0.0)
    model = model_class(config).train()
    pixel_values = torch.randn(2, 3, 45, 61)
    scalar_objective(run(model, pixel_values, make_labels(model_class, config, 2, 45, 61))).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def enable_checkpointing(model):
    # transformers 5 renamed the method; 4.x only has the old name.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


@pytest.mark.slow
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_gradient_checkpointing_changes_nothing(tiny_config, model_class):
    # With dropout and stochastic depth on: recomputation must replay the same random draws.
    config = tiny_config(hidden_dropout_prob=0.1, drop_path_rate=0.2)
    pixel_values = torch.randn(2, 3, 45, 61)
    labels = make_labels(model_class, config, 2, 45, 61)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = model_class(config).train()
        if checkpointing:
            enable_checkpointing(model)
        block_calls = []
        # On the block's first module, as transformers checkpoints the block's `forward` (its own hooks run
        # once); a pre-hook, as the recomputation stops early, once it has what the backward needs.
        model.base_model.stages[2].blocks[0].norm1.register_forward_pre_hook(lambda *_: block_calls.append(1))
        torch.manual_seed(1)
        outputs = run(model, pixel_values, labels)
        scalar_objective(outputs).backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        results.append((main_outputs(outputs), grads, len(block_calls)))
    (plain_out, plain_grads, plain_calls), (ckpt_out, ckpt_grads, ckpt_calls) = results
    # Checkpointing really happened: the block ran again during the backward pass.
    assert (plain_calls, ckpt_calls) == (1, 2)
    for a, b in zip(plain_out, ckpt_out):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(plain_grads[name], ckpt_grads[name], msg=name)


def count_block_calls(model) -> list:
    """Forward calls per transformer block, recomputations included. Counted on the block's first module:
    transformers checkpoints the block's `forward`, inside its hooks."""
    blocks = [block for stage in model.base_model.stages for block in stage.blocks]
    counts = [0] * len(blocks)
    for index, block in enumerate(blocks):
        block.norm1.register_forward_pre_hook(lambda *_, index=index: counts.__setitem__(index, counts[index] + 1))
    return counts


def training_step(model, pixel_values, labels) -> dict:
    torch.manual_seed(1)
    model(pixel_values, labels=labels).loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_only_blocks_with_checkpointing_on_are_recomputed(tiny_config):
    # Five blocks; with dropout and stochastic depth, so the recomputed ones must replay the same draws.
    config = tiny_config(depths=[1, 2, 1, 1], hidden_dropout_prob=0.1, drop_path_rate=0.2)
    pixel_values, labels = torch.randn(2, 3, 45, 61), torch.randint(0, 5, (2, 45, 61))
    torch.manual_seed(0)
    plain = SegFormerForSemanticSegmentation(config).train()
    torch.manual_seed(0)
    model = SegFormerForSemanticSegmentation(config).train()
    enable_checkpointing(model)
    blocks = [block for stage in model.segformer.stages for block in stage.blocks]
    # The blocks are the checkpointing units; the stages no longer checkpoint on their own.
    assert all(block.gradient_checkpointing for block in blocks)
    assert not any(hasattr(stage, "gradient_checkpointing") for stage in model.segformer.stages)
    for block in blocks[1::2]:
        block.gradient_checkpointing = False
    counts = count_block_calls(model)
    grads = training_step(model, pixel_values, labels)
    assert counts == [2, 1, 2, 1, 2]
    expected = training_step(plain, pixel_values, labels)
    assert grads.keys() == expected.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], msg=name)


# transformers 5 renamed the method (and added `every_n_layers`); 4.x only has the old name.
ENABLE_CHECKPOINTING = getattr(transformers.PreTrainedModel, "activation_checkpointing_enable", None) or (
    transformers.PreTrainedModel.gradient_checkpointing_enable
)


@pytest.mark.skipif(
    "every_n_layers" not in inspect.signature(ENABLE_CHECKPOINTING).parameters,
    reason="this transformers has no `every_n_layers`",
)
def test_checkpointing_every_second_block(tiny_config):
    model = SegFormerForSemanticSegmentation(tiny_config(depths=[1, 2, 1, 1])).train()
    ENABLE_CHECKPOINTING(model, every_n_layers=2)
    assert [block.gradient_checkpointing for stage in model.segformer.stages for block in stage.blocks] == [
        True, False, True, False, True
    ]
    counts = count_block_calls(model)
    training_step(model, torch.randn(1, 3, 32, 32), torch.randint(0, 5, (1, 32, 32)))
    assert counts == [2, 1, 2, 1, 2]


def import_without_modeling_layers(monkeypatch):
    """A fresh copy of the model file, imported as on a transformers without `modeling_layers` (4.46)."""
    name = "segformer._modeling_without_modeling_layers"
    spec = importlib.util.spec_from_file_location(name, segformer.modeling_segformer.__file__)
    module = importlib.util.module_from_spec(spec)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "transformers.modeling_layers", None)  # makes the import fail
        spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fallback_checkpointing_layer_works_as_transformers_own(tiny_config, monkeypatch):
    module = import_without_modeling_layers(monkeypatch)
    assert module.GradientCheckpointingLayer.__module__ == module.__name__
    config = tiny_config(depths=[1, 2, 1, 1], hidden_dropout_prob=0.1, drop_path_rate=0.2)
    pixel_values, labels = torch.randn(2, 3, 45, 61), torch.randint(0, 5, (2, 45, 61))
    torch.manual_seed(0)
    plain = module.SegFormerForSemanticSegmentation(config).train()
    torch.manual_seed(0)
    model = module.SegFormerForSemanticSegmentation(config).train()
    enable_checkpointing(model)  # sets the flag on every module that has one, as 4.46 does
    model.segformer.stages[1].blocks[1].gradient_checkpointing = False
    counts = count_block_calls(model)
    grads = training_step(model, pixel_values, labels)
    assert counts == [2, 2, 1, 2, 2]
    expected = training_step(plain, pixel_values, labels)
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], msg=name)
    # No recomputation without gradients (evaluation inside a training loop).
    counts[:] = [0] * 5
    with torch.no_grad():
        model(pixel_values)
    assert counts == [1] * 5


def test_drop_path_schedule_is_linear_over_all_blocks(tiny_config):
    model = SegFormerModel(tiny_config(depths=[1, 2, 3, 1], drop_path_rate=0.3))
    rates = [block.drop_path.drop_prob for stage in model.stages for block in stage.blocks]
    assert rates == pytest.approx([0.3 * i / 6 for i in range(7)])


def test_drop_path_drops_whole_samples_in_training_only(tiny_config):
    drop_path = SegFormerModel(tiny_config(depths=[1, 1, 1, 1], drop_path_rate=0.5)).stages[3].blocks[0].drop_path
    x = torch.randn(4000, 3, 5)
    kept = drop_path.train()(x)
    per_sample = kept.flatten(1)
    dropped = (per_sample == 0).all(dim=1)
    # Kept samples are rescaled by 1 / keep_prob so the expectation is unchanged.
    torch.testing.assert_close(per_sample[~dropped], 2 * x.flatten(1)[~dropped])
    assert 0.45 < dropped.float().mean() < 0.55
    assert torch.equal(drop_path.eval()(x), x)


# ---------------------------------------------------------------------------------------------------
# Losses

def upsampled_logits(model, pixel_values, size):
    return F.interpolate(model(pixel_values).logits, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("ignore_index", [255, 2])
def test_ignored_pixels_do_not_move_the_loss(tiny_config, ignore_index):
    model = SegFormerForSemanticSegmentation(tiny_config(semantic_loss_ignore_index=ignore_index)).eval()
    # A trained-looking classifier: the fresh one (std 0.01) makes every pixel's loss nearly log(5).
    nn.init.normal_(model.decode_head.linear_pred.weight, std=1.0)
    pixel_values = torch.randn(2, 3, 45, 61)
    labels = torch.randint(0, 5, (2, 45, 61))
    labels[labels == ignore_index] = 0
    ignored = torch.zeros_like(labels, dtype=torch.bool)
    ignored[0, :20] = True
    ignored[1, :, 30:] = True
    with torch.no_grad():
        logits = upsampled_logits(model, pixel_values, labels.shape[-2:])
        # Whatever the ignored pixels were labelled, the loss is the mean over the other pixels.
        per_pixel = F.cross_entropy(logits, labels, reduction="none")
        assert per_pixel[ignored].mean().item() != pytest.approx(per_pixel[~ignored].mean().item(), abs=1e-3)
        loss = model(pixel_values, labels=labels.masked_fill(ignored, ignore_index)).loss
    assert loss.item() == pytest.approx(per_pixel[~ignored].mean().item(), rel=1e-5)


def test_single_label_loss_is_bce_over_valid_pixels(tiny_config):
    model = SegFormerForSemanticSegmentation(tiny_config(num_labels=1)).eval()
    pixel_values = torch.randn(2, 3, 45, 61)
    labels = torch.randint(0, 2, (2, 45, 61))
    labels[:, :15] = 255
    valid = labels != 255
    with torch.no_grad():
        logits = upsampled_logits(model, pixel_values, labels.shape[-2:])[:, 0]
        per_pixel = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
        loss = model(pixel_values, labels=labels).loss
    assert loss.item() == pytest.approx(per_pixel[valid].mean().item(), rel=1e-5)
    # Not diluted by the ignored pixels, as a mean over all pixels would be.
    assert loss.item() != pytest.approx((per_pixel * valid).mean().item(), rel=1e-2)


def test_loss_backpropagates_nothing_from_ignored_pixels(tiny_config):
    # A loss that reads ignored pixels would have a gradient there; the upsampled logits see none.
    model = SegFormerForSemanticSegmentation(tiny_config()).eval()
    labels = torch.full((1, 32, 32), 255)
    labels[:, :8] = 1
    pixel_values = torch.randn(1, 3, 32, 32)
    logits = model(pixel_values).logits.detach().requires_grad_()
    semantic_segmentation_loss(logits, labels, 255).backward()
    # Rows 0-7 of the labels are 1/4 of the image: only the logit rows they interpolate from move.
    assert logits.grad[..., :3, :].abs().sum() > 0
    assert logits.grad[..., 4:, :].abs().sum() == 0


# ---------------------------------------------------------------------------------------------------
# Outputs: attentions, hidden states, tuples

@pytest.mark.parametrize("height, width", INPUT_SIZES)
def test_output_attentions_shapes_and_equal_to_sdpa_path(tiny_config, height, width):
    config = tiny_config()
    model = SegFormerForSemanticSegmentation(config).eval()
    pixel_values = torch.randn(2, 3, height, width)
    with torch.no_grad():
        fused = model(pixel_values)
        explicit = model(pixel_values, output_attentions=True)
    assert fused.attentions is None
    expected_shapes = []
    for stage, depth in enumerate(config.depths):
        h, w = ceil_div(height, STAGE_STRIDES[stage]), ceil_div(width, STAGE_STRIDES[stage])
        sr = config.sr_ratios[stage]
        reduced = (h // sr) * (w // sr)  # the reduction conv has kernel = stride = sr and no padding
        expected_shapes += [(2, config.num_attention_heads[stage], h * w, reduced)] * depth
    assert [tuple(a.shape) for a in explicit.attentions] == expected_shapes
    for attention in explicit.attentions:
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))
    torch.testing.assert_close(explicit.logits, fused.logits, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Attention implementations: "sdpa" (default) and "eager"

SDPA = F.scaled_dot_product_attention


def count_sdpa_calls(monkeypatch, fail: bool = False) -> list:
    """Replaces `F.scaled_dot_product_attention` by a spy that counts its calls, or fails on any."""
    calls = []

    def spy(*args, **kwargs):
        if fail:
            raise AssertionError("the eager path called scaled_dot_product_attention")
        calls.append(1)
        return SDPA(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


def test_sdpa_and_eager_give_equal_outputs(tiny_config, monkeypatch):
    config = tiny_config()
    sdpa = SegFormerForSemanticSegmentation(config).eval()
    eager = SegFormerForSemanticSegmentation(tiny_config(attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    pixel_values = torch.randn(2, 3, 45, 61)
    calls = count_sdpa_calls(monkeypatch)
    with torch.no_grad():
        expected = sdpa(pixel_values)
        assert len(calls) == sum(config.depths)  # the default runs the fused kernel in every block
        count_sdpa_calls(monkeypatch, fail=True)
        actual = eager(pixel_values)
        explicit = eager(pixel_values, output_attentions=True)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=1e-6)
    assert actual.attentions is None and len(explicit.attentions) == sum(config.depths)
    assert torch.equal(explicit.logits, actual.logits)


def test_eager_gradients_equal_sdpa_gradients(tiny_config):
    config = tiny_config(drop_path_rate=0.0, classifier_dropout_prob=0.0)
    pixel_values, labels = torch.randn(2, 3, 45, 61), torch.randint(0, 5, (2, 45, 61))
    model = SegFormerForSemanticSegmentation(config).train()
    grads = {}
    for implementation in ("sdpa", "eager"):
        model.config._attn_implementation = implementation
        model.zero_grad()
        model(pixel_values, labels=labels).loss.backward()
        grads[implementation] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, grad in grads["sdpa"].items():
        torch.testing.assert_close(grads["eager"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_output_attentions_are_the_same_on_both_implementations(tiny_config):
    sdpa = SegFormerModel(tiny_config()).eval()
    eager = SegFormerModel(tiny_config(attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    pixel_values = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        expected, actual = sdpa(pixel_values, output_attentions=True), eager(pixel_values, output_attentions=True)
    assert len(actual.attentions) == len(expected.attentions) == 5
    for a, e in zip(actual.attentions, expected.attentions):
        assert torch.equal(a, e)


def test_from_pretrained_honours_attn_implementation(tiny_config, tmp_path, monkeypatch):
    SegFormerForSemanticSegmentation(tiny_config()).save_pretrained(tmp_path)
    for requested, expected in ((None, "sdpa"), ("sdpa", "sdpa"), ("eager", "eager")):
        kwargs = {} if requested is None else {"attn_implementation": requested}
        model = SegFormerForSemanticSegmentation.from_pretrained(tmp_path, **kwargs).eval()
        assert model.config._attn_implementation == expected, requested
        calls = count_sdpa_calls(monkeypatch, fail=expected == "eager")
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        assert len(calls) == (5 if expected == "sdpa" else 0)
    # The choice is not saved: a folder loads with the default.
    model.save_pretrained(tmp_path / "again")
    assert SegFormerForSemanticSegmentation.from_pretrained(tmp_path / "again").config._attn_implementation == "sdpa"


@pytest.mark.skipif(not hasattr(transformers.PreTrainedModel, "set_attn_implementation"), reason="transformers 4.x")
def test_set_attn_implementation_switches_the_running_path(tiny_config, monkeypatch):
    model = SegFormerForSemanticSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    assert model.segformer.config._attn_implementation == "eager"
    count_sdpa_calls(monkeypatch, fail=True)
    with torch.no_grad():
        eager_logits = model(pixel_values).logits
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"
    calls = count_sdpa_calls(monkeypatch)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, eager_logits, rtol=0, atol=1e-6)
    assert len(calls) == 5


UNSUPPORTED_ATTENTION = ["flash_attention_2", "flex_attention", "paged|eager"]


@pytest.mark.parametrize("implementation", UNSUPPORTED_ATTENTION)
def test_unsupported_attn_implementation_is_refused(tiny_config, tmp_path, implementation):
    message = rf"does not support attn_implementation='{re.escape(implementation)}': use \"sdpa\".*or \"eager\""
    with pytest.raises(ValueError, match=message):
        SegFormerForSemanticSegmentation(tiny_config(attn_implementation=implementation))
    SegFormerForSemanticSegmentation(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        SegFormerForSemanticSegmentation.from_pretrained(tmp_path, attn_implementation=implementation)


def test_an_unsupported_attn_implementation_set_later_is_refused_at_the_call(tiny_config):
    model = SegFormerModel(tiny_config()).eval()
    model.config._attn_implementation = "paged|eager"  # transformers 5's `set_attn_implementation` lets this through
    with pytest.raises(ValueError, match="does not support attn_implementation='paged|eager'"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("model_class", [SegFormerForSemanticSegmentation, SegFormerForImageClassification])
def test_output_hidden_states_only_when_asked(tiny_config, model_class):
    model = model_class(tiny_config()).eval()
    pixel_values = torch.randn(1, 3, 45, 61)
    encoder_maps = model.segformer(pixel_values, output_hidden_states=True).hidden_states
    assert model(pixel_values).hidden_states is None
    maps = model(pixel_values, output_hidden_states=True).hidden_states
    assert len(maps) == 4 and all(torch.equal(a, b) for a, b in zip(maps, encoder_maps))


def test_config_output_flags_are_the_defaults(tiny_config):
    config = tiny_config(output_hidden_states=True, output_attentions=True, return_dict=False)
    logits, hidden_states, attentions = SegFormerForSemanticSegmentation(config).eval()(torch.randn(1, 3, 32, 32))
    assert logits.shape == (1, 5, 8, 8)
    assert (len(hidden_states), len(attentions)) == (4, sum(config.depths))


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_return_dict_false_gives_the_same_tuple(tiny_config, model_class):
    config = tiny_config()
    model = model_class(config).eval()
    pixel_values = torch.randn(2, 3, 45, 61)
    labels = make_labels(model_class, config, 2, 45, 61)
    kwargs = dict(output_hidden_states=True, output_attentions=True)
    as_dict = run(model, pixel_values, labels, **kwargs).to_tuple()
    as_tuple = run(model, pixel_values, labels, return_dict=False, **kwargs)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict)
    flat = lambda t: [x for item in t for x in (item if isinstance(item, tuple) else (item,))]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(flat(as_dict), flat(as_tuple), strict=True))


# ---------------------------------------------------------------------------------------------------
# Save/load, compile, autocast

@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_save_load_round_trip_is_exact(tiny_config, model_class, tmp_path):
    model = model_class(tiny_config()).eval()
    randomize_batch_norm(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    loaded = model_class.from_pretrained(tmp_path).eval()
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    pixel_values = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(main_outputs(model(pixel_values)), main_outputs(loaded(pixel_values))))


@pytest.mark.slow
def test_torch_compile_fullgraph_gives_the_same_logits(tiny_config):
    # One block per stage: compile time grows with the graph, and one block shows every kind of op.
    model = SegFormerForSemanticSegmentation(tiny_config(depths=[1, 1, 1, 1])).eval()
    randomize_batch_norm(model)
    pixel_values = torch.randn(2, 3, 45, 61)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(pixel_values).logits, model(pixel_values).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_and_stays_close(tiny_config, dtype):
    model = SegFormerForSemanticSegmentation(tiny_config()).train()
    pixel_values = torch.randn(2, 3, 45, 61)
    labels = torch.randint(0, 5, (2, 45, 61))
    torch.manual_seed(1)
    reference = model(pixel_values, labels=labels)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=dtype):
        outputs = model(pixel_values, labels=labels)
    assert outputs.logits.dtype == dtype
    assert outputs.loss.dtype == torch.float32
    outputs.loss.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    # bf16 keeps ~3 significant digits (fp16 ~4): the logits differ by a few percent of their spread at most.
    error = (outputs.logits.float() - reference.logits).abs().max()
    assert error < 0.05 * reference.logits.std()
    assert outputs.loss.item() == pytest.approx(reference.loss.item(), rel=0.02)


# ---------------------------------------------------------------------------------------------------
# Initialisation as the original (timm-style)

def test_init_matches_the_original_scheme(tiny_config):
    model = SegFormerForSemanticSegmentation(tiny_config(initializer_range=0.03))
    linear_weights, conv_weights = [], []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            linear_weights.append(module.weight.flatten())
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        elif module is model.decode_head.linear_pred:
            assert module.weight.std().item() == pytest.approx(0.01, rel=0.2)
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            conv_weights.append(module.weight.flatten() / math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                assert torch.equal(module.bias, torch.zeros_like(module.bias))
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    linear_weights, conv_weights = torch.cat(linear_weights), torch.cat(conv_weights)
    # Truncated normal with std = initializer_range (the truncation at +-2 is absolute, as in timm).
    assert linear_weights.std().item() == pytest.approx(0.03, rel=0.05)
    assert linear_weights.abs().max() <= 2.0
    assert linear_weights.mean().abs() < 0.002
    # Conv: normal with std sqrt(2 / fan_out); normalised by it, the pooled weights have std 1.
    assert conv_weights.std().item() == pytest.approx(1.0, rel=0.05)


def test_layer_norm_epsilons_follow_the_original_by_default(tiny_config):
    # 1e-5 after a strided conv (patch embeddings, K/V reduction), 1e-6 in the blocks and stage norms: the
    # defaults (the README's promise), not values passed in.
    config = tiny_config()
    assert (config.layer_norm_eps, config.patch_layer_norm_eps) == (1e-6, 1e-5)
    model = SegFormerModel(config)
    norms = {name: module.eps for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)}
    after_strided_conv = {name for name in norms if name.endswith(("patch_embed.norm", "attn.norm"))}
    assert len(after_strided_conv) == 4 + 4  # one patch embedding per stage; one reduction per sr > 1 block
    assert all(norms[name] == 1e-5 for name in after_strided_conv)
    assert all(eps == 1e-6 for name, eps in norms.items() if name not in after_strided_conv)
    assert len(norms) - len(after_strided_conv) == 2 * sum(model.config.depths) + 4


# ---------------------------------------------------------------------------------------------------
# Bad input: a ValueError that names the problem

@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(1, 1, 64, 64), r"has 1 channels but the model expects config.num_channels=3"),
        (torch.randn(3, 64, 64), r"must be a \(batch, channels, height, width\) tensor, got \(3, 64, 64\)"),
        (torch.randn(1, 1, 3, 64, 64), r"must be a \(batch, channels, height, width\) tensor"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), r"floating-point tensor, got torch.uint8"),
        (torch.randn(1, 3, 16, 64), r"16x64 is too small.*at least 29x29"),
        ([[0.0]], r"must be a \(batch, channels, height, width\) tensor"),
    ],
    ids=["channels", "rank3", "rank5", "integer", "too-small", "not-a-tensor"],
)
def test_bad_pixel_values_raise_a_clear_error(tiny_config, model_class, pixel_values, message):
    with pytest.raises(ValueError, match=message):
        model_class(tiny_config())(pixel_values)


def test_minimum_input_size_is_exact(tiny_config):
    model = SegFormerModel(tiny_config()).eval()
    model(torch.randn(1, 3, 29, 29))  # the stage-1 map is 8x8, exactly one 8x8 reduction window
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 29, 28))


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.zeros(2, 1, 45, 61, dtype=torch.long), r"\(batch, height, width\).*got shape \(2, 1, 45, 61\)"),
        (torch.zeros(3, 45, 61, dtype=torch.long), r"batch 2, got shape \(3, 45, 61\)"),
        (torch.zeros(2, 45 * 61, dtype=torch.long), r"got shape \(2, 2745\)"),
    ],
    ids=["channel-dim", "batch", "flat"],
)
def test_labels_of_the_wrong_shape_raise_a_clear_error(tiny_config, labels, message):
    model = SegFormerForSemanticSegmentation(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(torch.randn(2, 3, 45, 61), labels=labels)
