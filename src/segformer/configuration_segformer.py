"""Configuration of SegFormer models (Mix Transformer encoder + All-MLP decoder).

Paper: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers" (https://arxiv.org/abs/2105.15203). Original code: https://github.com/NVlabs/SegFormer.

This file and the model, loss and image processing files are uploaded to the Hub next to the weights, so it imports
nothing but ``transformers``' public API and its sibling loss file (whose `LossSettings` checks the loss fields).
"""

from transformers import PretrainedConfig

from .loss_segformer import IGNORE_INDEX, LOSS_TYPES, LossSettings

# Encoder presets of the released MiT-B0..B5 models. The parameter counts are those of the semantic
# segmentation model with 150 labels (ADE20K), as published.
VARIANTS = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),  # 3.75M
    "b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256),  # 13.7M
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),  # 27.5M
    "b3": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 18, 3], decoder_hidden_size=768),  # 47.3M
    "b4": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3], decoder_hidden_size=768),  # 64.1M
    "b5": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3], decoder_hidden_size=768),  # 84.7M
}

# Spellings of a variant name: the bare name or one of these prefixes, in any case.
VARIANT_PREFIXES = ("mit-", "mit_", "segformer-", "segformer_")

# `decoder_type` values: the decode head on the encoder (`decode_heads_segformer.DECODE_HEADS`).
DECODER_TYPES = ("all_mlp", "mmseg")

_PER_STAGE_FIELDS = (
    "depths",
    "hidden_sizes",
    "num_attention_heads",
    "sr_ratios",
    "patch_sizes",
    "strides",
    "mlp_ratios",
)


def _floats(name: str, values) -> list:
    if isinstance(values, str):
        raise ValueError(f"`{name}` must be a list of numbers, got {values!r}.")
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a list of numbers, got {values!r}.") from None


def variant_name(name) -> str | None:
    """The preset key (`"b0"`..`"b5"`) that `name` spells, or None.

    `"b2"`, `"B2"`, `"mit-b2"`, `"mit_b2"`, `"MiT-B2"`, `"segformer-b2"` and `"segformer_b2"` all give
    `"b2"`; anything else (a path, a Hub repo id, `"b6"`) gives None, so callers can tell a variant
    from a checkpoint.
    """
    if not isinstance(name, str):
        return None
    key = name.lower()
    for prefix in VARIANT_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return key if key in VARIANTS else None


class SegFormerConfig(PretrainedConfig):
    r"""
    Configuration of a SegFormer model: a Mix Transformer (MiT) encoder and an All-MLP decode head. The
    defaults build MiT-B0 with the LayerNorm epsilons of the original implementation.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Number of input image channels.
        depths (`list[int]`, *optional*, defaults to `[2, 2, 2, 2]`):
            Number of transformer blocks in each of the four encoder stages.
        hidden_sizes (`list[int]`, *optional*, defaults to `[32, 64, 160, 256]`):
            Channel width of each stage.
        num_attention_heads (`list[int]`, *optional*, defaults to `[1, 2, 5, 8]`):
            Attention heads of each stage; each stage's width must be divisible by its heads.
        sr_ratios (`list[int]`, *optional*, defaults to `[8, 4, 2, 1]`):
            Spatial-reduction ratio of the keys/values in each stage (a strided conv of that kernel and
            stride); 1 disables the reduction.
        patch_sizes (`list[int]`, *optional*, defaults to `[7, 3, 3, 3]`):
            Kernel size of each stage's overlapping patch-embedding convolution (padding `k // 2`).
        strides (`list[int]`, *optional*, defaults to `[4, 2, 2, 2]`):
            Stride of each stage's overlapping patch-embedding convolution.
        mlp_ratios (`list[int]`, *optional*, defaults to `[4, 4, 4, 4]`):
            Hidden width of each stage's Mix-FFN, as a multiple of the stage width.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the Mix-FFN (a key of `transformers.activations.ACT2FN`).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout after the attention output projection and inside the Mix-FFN.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout of the attention probabilities.
        drop_path_rate (`float`, *optional*, defaults to 0.1):
            Stochastic-depth rate of the last block; it grows linearly from 0 over all blocks.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the LayerNorms inside the transformer blocks and at the end of each stage.
        patch_layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorms that follow a strided convolution: the patch embeddings and the
            key/value reduction. The original SegFormer uses 1e-6 and 1e-5 as here; `transformers`'
            SegFormer uses 1e-5 everywhere, so `layer_norm_eps=1e-5` reproduces it exactly.
        decoder_hidden_size (`int`, *optional*, defaults to 256):
            Width of the All-MLP decoder (256 for B0/B1, 768 for B2-B5).
        classifier_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout before the classifier of the decode head.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal that initialises Linear weights.
        decoder_type (`str`, *optional*, defaults to `"all_mlp"`):
            The decode head of `SegFormerForSemanticSegmentation`: `"all_mlp"`, the paper's All-MLP decoder, or
            `"mmseg"`, mmsegmentation's `SegformerHead` (a conv + BatchNorm + ReLU per stage before the
            upsampling, stage 1 first), the head of SegFormers trained with mmsegmentation.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255):
            Label value that the semantic-segmentation loss ignores.
        loss_type (`str`, *optional*, defaults to `"cross_entropy"`):
            Loss of `SegFormerForSemanticSegmentation`: `"cross_entropy"` (binary cross-entropy with one
            label), `"focal"` (Lin et al. 2017, with `focal_gamma`), `"dice"` (soft Dice over the classes
            present in the batch's labels), `"cross_entropy+dice"` (cross-entropy plus `dice_weight` times
            Dice) or `"ohem"` (cross-entropy over the hard pixels only, as mmseg's `OHEMPixelSampler`).
        class_weights (`list[float]`, *optional*):
            One non-negative weight per label. Pixel losses are averaged with the weight of each pixel's
            true class (torch's weighted mean: the sum of weighted losses over the sum of the weights of
            the pixels, so equal weights change nothing); Dice averages the classes with these weights. A
            one-label model takes one weight: that of the foreground pixels (background weighs 1).
            Defaults to all classes weighing the same.
        focal_gamma (`float`, *optional*, defaults to 2.0):
            Focusing parameter of the focal loss: each pixel's cross-entropy is scaled by
            (1 - p_true)^gamma; 0 gives cross-entropy.
        dice_weight (`float`, *optional*, defaults to 1.0):
            Weight of the Dice term of `"cross_entropy+dice"`.
        ohem_threshold (`float`, *optional*, defaults to 0.7):
            OHEM keeps the pixels whose predicted probability of their true class is below this, and at
            least the `ohem_min_kept` hardest ones.
        ohem_min_kept (`int`, *optional*, defaults to 100000):
            Pixels OHEM keeps at least, per image of the batch: the defaults are mmseg's
            `OHEMPixelSampler(thresh=0.7, min_kept=100000)` of its Cityscapes configs.
        threshold (`float`, *optional*, defaults to 0.5):
            One-label (sigmoid) models only: a pixel is foreground where its foreground probability is
            above this. `segformer evaluate --threshold auto --save-threshold` stores the best-IoU one;
            every label map (`segformer predict`, `pipeline()`, the app) uses it.
        out_features (`list[str]`, *optional*):
            For `SegFormerBackbone`: names of the stages to return (`"stage1"`..`"stage4"`). Defaults to
            all four stages.
        out_indices (`list[int]`, *optional*):
            For `SegFormerBackbone`: the same as `out_features`, by index into `stage_names` (0 is the
            stem). Give one of the two.
        kwargs:
            Passed to `PretrainedConfig` (`id2label`, `label2id`, `num_labels`, ...). Among them
            `attn_implementation`: `"sdpa"` (the default when a model is built) runs
            `torch.nn.functional.scaled_dot_product_attention`, `"eager"` the explicit softmax(QK^T)V;
            `model.config._attn_implementation` says which one the model runs.

    Example:

    ```python
    >>> from segformer import SegFormerConfig, SegFormerForSemanticSegmentation

    >>> config = SegFormerConfig.from_variant("b2", num_labels=19)
    >>> model = SegFormerForSemanticSegmentation(config)
    >>> config.hidden_sizes
    [64, 128, 320, 512]
    ```
    """

    model_type = "segformer-mit"

    def __init__(
        self,
        num_channels=3,
        depths=(2, 2, 2, 2),
        hidden_sizes=(32, 64, 160, 256),
        num_attention_heads=(1, 2, 5, 8),
        sr_ratios=(8, 4, 2, 1),
        patch_sizes=(7, 3, 3, 3),
        strides=(4, 2, 2, 2),
        mlp_ratios=(4, 4, 4, 4),
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.1,
        layer_norm_eps=1e-6,
        patch_layer_norm_eps=1e-5,
        decoder_hidden_size=256,
        classifier_dropout_prob=0.1,
        initializer_range=0.02,
        decoder_type="all_mlp",
        semantic_loss_ignore_index=IGNORE_INDEX,
        loss_type="cross_entropy",
        class_weights=None,
        focal_gamma=2.0,
        dice_weight=1.0,
        ohem_threshold=0.7,
        ohem_min_kept=100_000,
        threshold=0.5,
        out_features=None,
        out_indices=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_channels = num_channels
        self.depths = list(depths)
        self.hidden_sizes = list(hidden_sizes)
        self.num_attention_heads = list(num_attention_heads)
        self.sr_ratios = list(sr_ratios)
        self.patch_sizes = list(patch_sizes)
        self.strides = list(strides)
        self.mlp_ratios = list(mlp_ratios)
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.layer_norm_eps = layer_norm_eps
        self.patch_layer_norm_eps = patch_layer_norm_eps
        self.decoder_hidden_size = decoder_hidden_size
        self.classifier_dropout_prob = classifier_dropout_prob
        self.initializer_range = initializer_range
        self.decoder_type = decoder_type
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.loss_type = loss_type
        self.class_weights = class_weights if class_weights is None else _floats("class_weights", class_weights)
        self.focal_gamma = focal_gamma
        self.dice_weight = dice_weight
        self.ohem_threshold = ohem_threshold
        self.ohem_min_kept = ohem_min_kept
        self.threshold = threshold
        self._validate()
        self.stage_names = ["stem"] + [f"stage{i + 1}" for i in range(len(self.depths))]
        self._out_features, self._out_indices = self._align_out_features(out_features, out_indices)

    @classmethod
    def from_variant(cls, variant: str, **kwargs) -> "SegFormerConfig":
        """Config of a released variant: `"b0"`..`"b5"` in any spelling `variant_name` reads
        (`"B2"`, `"mit-b2"`, `"MiT_B2"`, `"segformer-b2"`, ...).

        Keyword arguments override the preset, e.g. `from_variant("b2", num_labels=19)`.
        """
        name = variant_name(variant)
        if name is None:
            spellings = ", ".join(f"{prefix}b2" for prefix in ("", *VARIANT_PREFIXES))
            raise ValueError(
                f"Unknown SegFormer variant {variant!r}: choose one of {', '.join(VARIANTS)}, in any case and "
                f"optionally prefixed: {spellings}."
            )
        return cls(**{**VARIANTS[name], **kwargs})

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    # `from_pretrained(..., out_features=...)` sets one of the pair after construction: the setters
    # realign the other, so the backbone never reads a stale `out_indices`.
    @property
    def out_features(self) -> list:
        return self._out_features

    @out_features.setter
    def out_features(self, out_features):
        self._out_features, self._out_indices = self._align_out_features(out_features, None)

    @property
    def out_indices(self) -> list:
        return self._out_indices

    @out_indices.setter
    def out_indices(self, out_indices):
        self._out_features, self._out_indices = self._align_out_features(None, out_indices)

    def verify_out_features_out_indices(self):
        """Raises ValueError unless `out_features` and `out_indices` name the same known stages: the check of
        transformers' `BackboneConfigMixin`, which transformers 5 runs when it builds a backbone."""
        self._align_out_features(self._out_features, self._out_indices)

    def to_dict(self) -> dict:
        output = super().to_dict()
        output["out_features"] = output.pop("_out_features")
        output["out_indices"] = output.pop("_out_indices")
        return output

    def _validate(self):
        lengths = {name: len(getattr(self, name)) for name in _PER_STAGE_FIELDS}
        if len(set(lengths.values())) != 1:
            listing = ", ".join(f"{name}={n}" for name, n in lengths.items())
            raise ValueError(f"The per-stage lists must all have one entry per stage; got lengths {listing}.")
        for name in (*_PER_STAGE_FIELDS, "num_channels", "decoder_hidden_size"):
            values = getattr(self, name)
            for value in values if isinstance(values, list) else [values]:
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"`{name}` must hold positive integers, got {values!r}.")
        for stage, (width, heads) in enumerate(zip(self.hidden_sizes, self.num_attention_heads), start=1):
            if width % heads:
                raise ValueError(
                    f"`hidden_sizes[{stage - 1}]`={width} is not divisible by "
                    f"`num_attention_heads[{stage - 1}]`={heads} (stage {stage})."
                )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate", "classifier_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)!r}.")
        for name in ("layer_norm_eps", "patch_layer_norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)!r}.")
        if self.decoder_type not in DECODER_TYPES:
            raise ValueError(f"`decoder_type` must be one of {', '.join(DECODER_TYPES)}, got {self.decoder_type!r}.")
        self.loss_settings().check(self.num_labels)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0 < self.threshold < 1:
            raise ValueError(f"`threshold` must be a probability in (0, 1), got {self.threshold!r}.")

    def loss_settings(self) -> LossSettings:
        """The loss fields as one `LossSettings`, what the model's loss reads."""
        values = {name: getattr(self, name) for name in LossSettings.field_names()}
        if values["class_weights"] is not None:
            values["class_weights"] = tuple(values["class_weights"])
        return LossSettings(**values)

    def _align_out_features(self, out_features, out_indices):
        if out_features is None and out_indices is None:
            out_indices = list(range(1, len(self.stage_names)))
        if out_indices is not None:
            out_indices = list(out_indices)
            for index in out_indices:
                if not -len(self.stage_names) <= index < len(self.stage_names):
                    raise ValueError(f"`out_indices` {out_indices} index into {self.stage_names}: {index} is out of range.")
            names = [self.stage_names[i] for i in out_indices]
            if out_features is not None and list(out_features) != names:
                raise ValueError(f"`out_features` {out_features} and `out_indices` {out_indices} disagree.")
            out_features = names
        # The patch embedding is part of stage 1, so there is no stem feature map to return.
        unknown = [name for name in out_features if name not in self.stage_names[1:]]
        if unknown:
            raise ValueError(f"`out_features` has unknown stages {unknown}; choose from {self.stage_names[1:]}.")
        out_features = sorted(set(out_features), key=self.stage_names.index)
        return out_features, [self.stage_names.index(name) for name in out_features]


__all__ = ["SegFormerConfig", "LOSS_TYPES", "VARIANTS", "VARIANT_PREFIXES", "variant_name"]
