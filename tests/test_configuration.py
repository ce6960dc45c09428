"""SegFormerConfig: published parameter counts, validation, every field read by the model, round trips."""

import inspect

import pytest
import torch

from segformer import (
    VARIANTS,
    SegFormerBackbone,
    SegFormerConfig,
    SegFormerForSemanticSegmentation,
)
from segformer.configuration_segformer import variant_name
from segformer.decode_heads_segformer import DECODE_HEADS, AllMLPDecoder

# Semantic-segmentation models with 150 labels (ADE20K), as published with the paper's checkpoints.
PUBLISHED_PARAMETERS = {
    "b0": 3_752_694,
    "b1": 13_715_798,
    "b2": 27_461_974,
    "b3": 47_337_814,
    "b4": 64_108_374,
    "b5": 84_708_694,
}


def test_every_variant_has_a_published_count():
    assert set(PUBLISHED_PARAMETERS) == set(VARIANTS)


@pytest.mark.parametrize("variant", sorted(PUBLISHED_PARAMETERS))
def test_variant_parameter_count_matches_published(variant):
    config = SegFormerConfig.from_variant(variant, num_labels=150)
    # The meta device allocates nothing, so even B5 builds in a fraction of a second.
    with torch.device("meta"):
        model = SegFormerForSemanticSegmentation(config)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[variant]


def test_from_variant_accepts_aliases_and_overrides():
    config = SegFormerConfig.from_variant("MiT-B2", num_labels=19, drop_path_rate=0.2)
    assert config.depths == [3, 4, 6, 3]
    assert config.decoder_hidden_size == 768
    assert (config.num_labels, config.drop_path_rate) == (19, 0.2)


# ---------------------------------------------------------------------------------------------------
# Validation: a ValueError whose message names the offending field.

@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(depths=[1, 1, 1]), "depths=3"),
        (dict(sr_ratios=[8, 4, 2, 1, 1]), "sr_ratios=5"),
        (dict(mlp_ratios=[4, 4]), "mlp_ratios=2"),
        (dict(hidden_sizes=[8, 16, 24, 30]), r"hidden_sizes\[3\]`=30 is not divisible by `num_attention_heads\[3\]`=4"),
        (dict(hidden_sizes=[0, 16, 24, 32]), "`hidden_sizes`"),
        (dict(depths=[1, 0, 1, 1]), "`depths`"),
        (dict(num_attention_heads=[1, -2, 3, 4]), "`num_attention_heads`"),
        (dict(sr_ratios=[8, 4, 0, 1]), "`sr_ratios`"),
        (dict(patch_sizes=[0, 3, 3, 3]), "`patch_sizes`"),
        (dict(strides=[4, 2, 2, 0]), "`strides`"),
        (dict(mlp_ratios=[4, 4, 4, -1]), "`mlp_ratios`"),
        (dict(num_channels=0), "`num_channels`"),
        (dict(decoder_hidden_size=-16), "`decoder_hidden_size`"),
        (dict(hidden_sizes=[8.0, 16, 24, 32]), "`hidden_sizes`"),
        (dict(hidden_dropout_prob=1.0), "`hidden_dropout_prob`"),
        (dict(attention_probs_dropout_prob=-0.1), "`attention_probs_dropout_prob`"),
        (dict(drop_path_rate=1.5), "`drop_path_rate`"),
        (dict(classifier_dropout_prob=2.0), "`classifier_dropout_prob`"),
        (dict(layer_norm_eps=0.0), "`layer_norm_eps`"),
        (dict(patch_layer_norm_eps=-1e-5), "`patch_layer_norm_eps`"),
        (dict(initializer_range=0.0), "`initializer_range`"),
        (dict(out_features=["stage5"]), "`out_features` has unknown stages"),
        (dict(out_indices=[7]), "`out_indices`"),
        (dict(out_features=["stage1"], out_indices=[2]), "disagree"),
    ],
)
def test_invalid_config_names_the_field(tiny_config, overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_unknown_variant_lists_the_choices():
    with pytest.raises(ValueError, match=r"Unknown SegFormer variant 'b9'.*b0, b1, b2, b3, b4, b5"):
        SegFormerConfig.from_variant("b9")


def test_unknown_variant_lists_the_accepted_spellings():
    with pytest.raises(ValueError, match=r"any case.*b2, mit-b2, mit_b2, segformer-b2, segformer_b2\.$"):
        SegFormerConfig.from_variant("mit-b2-ade")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("b0", "b0"), ("B2", "b2"), ("mit-b0", "b0"), ("mit_b0", "b0"), ("MiT-B0", "b0"), ("MIT_B3", "b3"),
        ("segformer-b0", "b0"), ("segformer_b5", "b5"), ("SegFormer-B4", "b4"), ("b1", "b1"),
    ],
)
def test_variant_name_reads_every_spelling(name, expected):
    assert variant_name(name) == expected
    assert SegFormerConfig.from_variant(name).to_dict() == SegFormerConfig.from_variant(expected).to_dict()


@pytest.mark.parametrize("name", ["mit_b0", "MiT-B0", "segformer-b0"])
def test_train_takes_every_spelling_of_a_variant_for_a_model_from_scratch(name):
    from segformer.train import parse_options
    from segformer.train.model import build_model

    model = build_model(parse_options(["--model", name]), {0: "a", 1: "b"}, log=lambda message: None)
    assert model.config.hidden_sizes == SegFormerConfig.from_variant("b0").hidden_sizes


@pytest.mark.parametrize(
    "name",
    [
        "b6", "b", "", "mit-", "mitb0", "mit b0", " b0", "b0 ", "mit-mit-b0", "segformer-mit-b0",
        "nvidia/mit-b0", "nvidia/segformer-b0-finetuned-ade-512-512", "./b0", "mit-b0/", "vit-b0", None, 2,
    ],
)
def test_variant_name_is_none_for_anything_else(name):
    assert variant_name(name) is None


# ---------------------------------------------------------------------------------------------------
# Every field is read by the model: changing it changes the parameters or the outputs.

# field -> (a valid value different from the base config's, model class that exposes the effect[, fields
# the base needs for the change to matter: a loss's own parameter only acts under that loss]).
# Dropout fields only act in train mode, so every probe runs in train mode (deterministic seeds).
FIELD_CHANGES = {
    "num_channels": (1, SegFormerForSemanticSegmentation),
    "depths": ([1, 1, 1, 1], SegFormerForSemanticSegmentation),
    "hidden_sizes": ([8, 16, 24, 40], SegFormerForSemanticSegmentation),
    "num_attention_heads": ([2, 2, 3, 4], SegFormerForSemanticSegmentation),
    "sr_ratios": ([4, 2, 2, 1], SegFormerForSemanticSegmentation),
    "patch_sizes": ([5, 3, 3, 3], SegFormerForSemanticSegmentation),
    "strides": ([4, 2, 2, 1], SegFormerForSemanticSegmentation),
    "mlp_ratios": ([3, 2, 2, 2], SegFormerForSemanticSegmentation),
    "hidden_act": ("relu", SegFormerForSemanticSegmentation),
    "hidden_dropout_prob": (0.5, SegFormerForSemanticSegmentation),
    "attention_probs_dropout_prob": (0.5, SegFormerForSemanticSegmentation),
    "drop_path_rate": (0.5, SegFormerForSemanticSegmentation),
    "layer_norm_eps": (1.0, SegFormerForSemanticSegmentation),
    "patch_layer_norm_eps": (1.0, SegFormerForSemanticSegmentation),
    "decoder_hidden_size": (8, SegFormerForSemanticSegmentation),
    "classifier_dropout_prob": (0.5, SegFormerForSemanticSegmentation),
    "initializer_range": (0.5, SegFormerForSemanticSegmentation),
    "semantic_loss_ignore_index": (1, SegFormerForSemanticSegmentation),
    "loss_type": ("focal", SegFormerForSemanticSegmentation),
    "class_weights": ([1.0, 2.0, 0.5, 1.0, 3.0], SegFormerForSemanticSegmentation),
    "focal_gamma": (0.5, SegFormerForSemanticSegmentation, dict(loss_type="focal")),
    "dice_weight": (0.3, SegFormerForSemanticSegmentation, dict(loss_type="cross_entropy+dice")),
    # The tiny model's class probabilities are about 1/5: a threshold of 0.2 splits the pixels.
    "ohem_threshold": (0.2, SegFormerForSemanticSegmentation, dict(loss_type="ohem", ohem_min_kept=10)),
    # 2 x 100 of the probe's 2 x 45 x 61 pixels, rather than all of them.
    "ohem_min_kept": (100, SegFormerForSemanticSegmentation, dict(loss_type="ohem", ohem_threshold=0.01)),
    "out_features": (["stage2", "stage4"], SegFormerBackbone),
    "out_indices": ([3], SegFormerBackbone),
}

# No dropout at all in the base, so that the base probe is deterministic and any dropout shows.
BASE_OVERRIDES = dict(drop_path_rate=0.0, classifier_dropout_prob=0.0)


# Fields with a single allowed value so far, which no change can probe: each is checked by its own test.
SINGLE_VALUED = {"decoder_type"}


def config_fields():
    return set(inspect.signature(SegFormerConfig.__init__).parameters) - {"self", "kwargs"} - SINGLE_VALUED


def test_decoder_type_picks_the_decode_head_and_refuses_unknown_kinds(tiny_config):
    model = SegFormerForSemanticSegmentation(tiny_config())
    assert type(model.decode_head) is DECODE_HEADS[SegFormerConfig().decoder_type] is AllMLPDecoder
    with pytest.raises(ValueError, match="`decoder_type` must be one of all_mlp"):
        tiny_config(decoder_type="upernet")


# Fields read after the forward pass, by the one place that turns logits into label maps.
POST_PROCESSING_FIELDS = {"threshold"}


def test_field_table_covers_every_config_field():
    assert set(FIELD_CHANGES) | POST_PROCESSING_FIELDS == config_fields()


def test_threshold_is_read_by_the_label_maps_of_a_one_label_model(tiny_config):
    from segformer.inference import InferenceSettings, segment, segment_probabilities

    model = SegFormerForSemanticSegmentation(tiny_config(num_labels=1, **BASE_OVERRIDES)).eval()
    image = torch.randn(3, 45, 61)
    probability = segment_probabilities(model, image[None], InferenceSettings(short_side=None))[0, 1]
    for threshold in (float(probability.quantile(0.3)), float(probability.quantile(0.7))):
        model.config.threshold = threshold
        label_map = segment(model, [image], InferenceSettings(short_side=None))[0]
        # Foreground where the logit is above log(t / (1 - t)): the sigmoid's float rounding may only
        # disagree within a hair of the threshold.
        differ = label_map != (probability > threshold).long()
        assert label_map.float().mean() not in (0, 1) and ((probability[differ] - threshold).abs() < 1e-6).all()


def fingerprint(config, model_class) -> dict:
    """Every parameter, buffer and output tensor of a freshly seeded model on a seeded input."""
    torch.manual_seed(0)
    model = model_class(config).train()
    torch.manual_seed(1)
    pixel_values = torch.randn(2, config.num_channels, 45, 61)
    kwargs = {}
    if model_class is SegFormerForSemanticSegmentation:
        # Labels in range, so that any ignore index in [0, num_labels) removes some pixels.
        kwargs["labels"] = torch.randint(0, config.num_labels, (2, 45, 61))
    outputs = model(pixel_values, output_hidden_states=True, **kwargs)
    tensors = {f"param:{name}": value for name, value in model.state_dict().items()}
    for key, value in outputs.items():
        for index, tensor in enumerate(value if isinstance(value, tuple) else (value,)):
            tensors[f"output:{key}.{index}"] = tensor.detach()
    return tensors


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def test_fingerprint_is_deterministic(tiny_config):
    config = tiny_config(**BASE_OVERRIDES)
    assert same(fingerprint(config, SegFormerForSemanticSegmentation), fingerprint(config, SegFormerForSemanticSegmentation))


@pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
def test_every_field_is_read_by_the_model(tiny_config, field):
    value, model_class, *needs = FIELD_CHANGES[field]
    overrides = {**BASE_OVERRIDES, **(needs[0] if needs else {})}
    base = tiny_config(**overrides)
    changed = tiny_config(**{**overrides, field: value})
    assert getattr(changed, field) != getattr(base, field)
    assert not same(fingerprint(base, model_class), fingerprint(changed, model_class)), (
        f"changing `{field}` to {value!r} changed neither the parameters nor the outputs"
    )


# ---------------------------------------------------------------------------------------------------
# Round trips

def test_to_dict_from_dict_round_trip(tiny_config):
    config = tiny_config(
        sr_ratios=[4, 2, 2, 1], hidden_act="relu", layer_norm_eps=1e-5, out_features=["stage2", "stage3"],
        id2label={0: "sky", 1: "road", 2: "car", 3: "tree", 4: "person"},
    )
    restored = SegFormerConfig.from_dict(config.to_dict())
    assert restored.to_dict() == config.to_dict()
    assert restored.out_indices == [2, 3]
    assert restored.id2label[1] == "road"


def test_save_load_round_trip(tiny_config, tmp_path):
    config = tiny_config(drop_path_rate=0.3, semantic_loss_ignore_index=0, out_indices=[1, 4])
    config.save_pretrained(tmp_path)
    assert SegFormerConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "override, features, indices",
    [
        (dict(out_features=["stage2", "stage4"]), ["stage2", "stage4"], [2, 4]),
        (dict(out_indices=[3]), ["stage3"], [3]),
    ],
)
def test_overriding_one_of_out_features_and_out_indices_realigns_the_other(tiny_config, tmp_path, override, features, indices):
    # `from_pretrained(..., out_features=...)` sets the attribute after construction.
    tiny_config().save_pretrained(tmp_path)
    config = SegFormerConfig.from_pretrained(tmp_path, **override)
    assert (config.out_features, config.out_indices) == (features, indices)
    assert SegFormerConfig.from_dict(config.to_dict()).out_indices == indices
