"""SegFormer in PyTorch: the Mix Transformer (MiT) encoder and the `transformers` model classes around it
(the decode heads live in the sibling `decode_heads_segformer.py`).

Paper: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers" (https://arxiv.org/abs/2105.15203). Original code: https://github.com/NVlabs/SegFormer
(`mmseg/models/backbones/mix_transformer.py`, `mmseg/models/decode_heads/segformer_head.py`); module
names mirror it so that original checkpoints convert by renaming.

Tokens live as (B, N, C) tensors, which is the memory layout of a channels-last (B, C, H, W) image, so
the convolutions (patch embeddings, key/value reduction, Mix-FFN) run on channels-last views of the
tokens without a copy. `forward` is one pass over the batch it is given: splitting large batches, caching and
device moves belong to the caller (`segformer.inference`), so outputs and loss are computed in one place.

This file is uploaded to the Hub with the weights: it imports only torch, `transformers`' public API and its
sibling configuration, decode head, loss and image processing files. Where the `segformer` package is
installed, `from_pretrained` and `push_to_hub` use it (see `from_segformer_package`).
"""

import enum
import importlib
import inspect
import math
import os
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutput,
    ImageClassifierOutput,
    SemanticSegmenterOutput,
)
from transformers.utils import logging

from .configuration_segformer import SegFormerConfig
from .decode_heads_segformer import DECODE_HEADS, DeploymentHead, PixelClassifier, to_image, to_tokens
from .image_processing_segformer import SegFormerImageProcessor
from .loss_segformer import semantic_segmentation_loss

# The image processor's siblings, named here because transformers 4.x copies only the model file's relative
# imports out of a local folder, not theirs; without them the processor's imports fail there.
from .postprocessing_segformer import logits_to_label_maps as _  # noqa: F401
from .resize_segformer import PROTOCOLS as _  # noqa: F401, F811

try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # transformers before 4.52 (4.46 included)

    class GradientCheckpointingLayer(nn.Module):
        """transformers' base class of checkpointable layers, for versions without one. Older
        `gradient_checkpointing_enable()` sets `gradient_checkpointing` and `_gradient_checkpointing_func` on
        every module that has the attribute, so per-layer control works the same. Tensors that need
        gradients must be passed positionally, as the reentrant checkpoint only tracks those."""

        gradient_checkpointing = False

        def __call__(self, *args, **kwargs):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                return self._gradient_checkpointing_func(partial(super().__call__, **kwargs), *args)
            return super().__call__(*args, **kwargs)


try:  # transformers 5
    from transformers.backbone_utils import BackboneMixin, BackboneType
except ImportError:
    try:  # transformers 4 (4.46 included)
        from transformers.utils.backbone_utils import BackboneMixin, BackboneType
    except ImportError:  # should a later transformers move them again: what `SegFormerBackbone` reads of them

        class BackboneType(enum.Enum):
            TRANSFORMERS = "transformers"

        class BackboneMixin:
            """Stand-in for transformers' backbone mixin: what `SegFormerBackbone` takes from it."""

            backbone_type = None
            has_attentions = True

            @property
            def out_feature_channels(self) -> dict:
                return dict(zip(self.stage_names, self.num_features))

            @property
            def channels(self) -> list:
                return [self.out_feature_channels[name] for name in self.out_features]


logger = logging.get_logger(__name__)

# `config._attn_implementation` values the attention runs: the fused kernel, or the explicit softmax(QK^T)V.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def check_attn_implementation(config: SegFormerConfig):
    implementation = config._attn_implementation
    # None: not chosen yet (transformers 5 picks "sdpa" when the model is built).
    if implementation is not None and implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"SegFormer does not support attn_implementation={implementation!r}: use \"sdpa\" (the default, "
            "torch.nn.functional.scaled_dot_product_attention) or \"eager\" (explicit softmax(QK^T)V)."
        )


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch of whole samples (Huang et al. 2016)."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x * mask.div_(keep_prob)  # scale the (B, 1, ...) mask, not the activations: one full-size pass

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class MixFFN(nn.Module):
    """fc1 -> 3x3 depthwise conv -> activation -> fc2. The depthwise conv leaks enough zero-padding
    information to replace positional embeddings, so any input size works."""

    def __init__(self, config: SegFormerConfig, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, groups=hidden_dim)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = self.fc1(x)
        x = to_tokens(self.dwconv(to_image(x, height, width)))
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a map shrunk by a strided conv of
    ratio `sr`, which cuts the cost from N^2 to N^2 / sr^2 on the high-resolution stages."""

    def __init__(self, config: SegFormerConfig, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        # Shared with the model, so that `set_attn_implementation` takes effect at the next call.
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = config.attention_probs_dropout_prob
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # rows: all keys, then all values (as the original)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(config.hidden_dropout_prob)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=config.patch_layer_norm_eps)

    def forward(self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        batch_size, num_tokens, dim = x.shape
        # (B, N, C) -> (B, heads, N, C/heads)
        q = self.q(x).view(batch_size, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(to_tokens(self.sr(to_image(x, height, width))))
        # (B, M, 2C) -> 2 x (B, heads, M, C/heads)
        kv = self.kv(x).view(batch_size, -1, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.attn_drop if self.training else 0.0
        # The fused kernel does not expose the probabilities, so the explicit path computes them.
        if output_attentions or self.config._attn_implementation == "eager":
            attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            out = F.dropout(attn, dropout, self.training) @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        # (B, heads, N, C/heads) -> (B, N, C)
        out = out.transpose(1, 2).reshape(batch_size, num_tokens, dim)
        return self.proj_drop(self.proj(out)), (attn if output_attentions else None)


class MixTransformerBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block. The checkpointing unit: with `gradient_checkpointing` on (per block,
    set by `gradient_checkpointing_enable()`) its activations are recomputed in the backward pass."""

    def __init__(self, config: SegFormerConfig, stage: int, drop_path: float):
        super().__init__()
        dim = config.hidden_sizes[stage]
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = EfficientSelfAttention(config, dim, config.num_attention_heads[stage], config.sr_ratios[stage])
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = MixFFN(config, dim, int(dim * config.mlp_ratios[stage]))

    def forward(self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False):
        attn_out, attn = self.attn(self.norm1(x), height, width, output_attentions)
        x = x + self.drop_path(attn_out)
        x = x + self.drop_path(self.mlp(self.norm2(x), height, width))
        return x, attn


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel is larger than its stride (7/4, then 3/2): patches overlap, which
    keeps local continuity across patch borders."""

    def __init__(self, config: SegFormerConfig, stage: int):
        super().__init__()
        in_channels = config.num_channels if stage == 0 else config.hidden_sizes[stage - 1]
        patch_size = config.patch_sizes[stage]
        self.proj = nn.Conv2d(
            in_channels,
            config.hidden_sizes[stage],
            kernel_size=patch_size,
            stride=config.strides[stage],
            padding=patch_size // 2,
        )
        self.norm = nn.LayerNorm(config.hidden_sizes[stage], eps=config.patch_layer_norm_eps)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(to_tokens(x)), height, width


class MixTransformerStage(nn.Module):
    """Patch embedding -> transformer blocks -> LayerNorm; returns a channels-last feature map."""

    def __init__(self, config: SegFormerConfig, stage: int, drop_path_rates: list):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(config, stage)
        self.blocks = nn.ModuleList(MixTransformerBlock(config, stage, rate) for rate in drop_path_rates)
        self.norm = nn.LayerNorm(config.hidden_sizes[stage], eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, output_attentions: bool = False):
        x, height, width = self.patch_embed(x)
        attentions = ()
        for block in self.blocks:
            x, attn = block(x, height, width, output_attentions)
            attentions += (attn,)
        return to_image(self.norm(x), height, width), attentions


def from_segformer_package(module: str, name: str):
    """`segformer.<module>.<name>` where the `segformer` package is installed, else None: the Hub copy of
    this file runs without the package, and then behaves as plain transformers code."""
    try:
        found = importlib.import_module(f"segformer.{module}")
    except ImportError as error:  # not installed, or blocked; a dependency missing under it is an error
        if error.name and error.name.split(".")[0] != "segformer":
            raise
        return None
    return getattr(found, name, None)


class SegFormerPreTrainedModel(PreTrainedModel):
    config_class = SegFormerConfig
    base_model_prefix = "segformer"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MixTransformerBlock"]

    def __init__(self, config: SegFormerConfig, *inputs, **kwargs):
        # Before transformers' own check, whose message lists implementations this model does not have.
        check_attn_implementation(config)
        super().__init__(config, *inputs, **kwargs)

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers 5 guesses this from the source and says no to an `*Attention(nn.Module)` that does not
        # dispatch through its attention registry; ours reads `config._attn_implementation` at every call.
        return True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, which also reads transformers' SegFormer checkpoints (when the
        `segformer` package is installed) and takes `num_channels=N` to adapt the checkpoint's first patch
        embedding to N input channels (see `adapt_input_channels`) rather than re-initialise it."""
        num_channels = kwargs.pop("num_channels", None)
        # (config, state dict) of ours for a checkpoint of transformers' own SegFormer, or None.
        converter = from_segformer_package("conversion.on_the_fly", "convert_for_from_pretrained")
        converted = None
        if converter is not None and pretrained_model_name_or_path is not None:
            converted = converter(pretrained_model_name_or_path, kwargs)
        if converted is None:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        else:
            kwargs["config"], kwargs["state_dict"] = converted
            loaded = super().from_pretrained(None, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) on request
        if converted is not None:
            model.name_or_path = model.config._name_or_path = str(pretrained_model_name_or_path)
        if num_channels is not None:
            adapt_input_channels(model, num_channels)
        return loaded

    def push_to_hub(self, repo_id: str, *args, **kwargs):
        """transformers' `push_to_hub`; where the `segformer` package is installed, its
        `segformer.hub.push_model_to_hub`, which takes the same arguments (plus the model card's: dataset,
        metrics, ...) and uploads the card it writes (variant, classes, results) instead of a generic one."""
        upload = from_segformer_package("hub.upload", "push_model_to_hub")
        if upload is None:
            return super().push_to_hub(repo_id, *args, **kwargs)
        return upload(self, repo_id, *args, **kwargs)

    def _init_weights(self, module):
        # As the original: truncated normal for Linear, fan-out normal for Conv, 1/0 for norms.
        # `nn.init` functions (not in-place tensor methods) so transformers can skip loaded weights.
        if isinstance(module, PixelClassifier):
            # mmseg's classifier init: fan-out normal would start a new head at logits of about 10
            # and a loss of about 8 that takes tens of steps to come down.
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                nn.init.zeros_(module.running_mean)
                nn.init.ones_(module.running_var)
                nn.init.zeros_(module.num_batches_tracked)

    def _resolve(self, name, value):
        if value is not None:
            return value
        return getattr(self.config, name, name == "return_dict")

    @property
    def is_fused(self) -> bool:
        return any(isinstance(module, DeploymentHead) for module in self.modules())

    @torch.no_grad()
    def fuse(self):
        """Prepare an eval-mode model for deployment: its decode head is replaced by the head's deployment
        module (`fused()`: BatchNorm running statistics and the fuse conv folded into per-stage Linears, a
        Linear classifier), which int8 quantization and export work on. Outputs stay equal up to float
        rounding; the fused model can be run, exported and compiled, but no longer trained or saved.
        Returns the model."""
        if self.training:
            raise RuntimeError("`fuse()` folds the BatchNorm's running statistics: call `model.eval()` first.")
        head = getattr(self, "decode_head", None)
        if head is not None and not isinstance(head, DeploymentHead):
            self.decode_head = head.fused()
        return self

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the default `SegFormerImageProcessor` when the folder has
        no processor config, so that `pipeline("image-segmentation", model=folder)` works on what was saved."""
        if self.is_fused:
            raise ValueError(
                "This model was fused for deployment (`fuse()`): its decoder no longer has the checkpoint's "
                "layout. Save the model before calling `fuse()`."
            )
        super().save_pretrained(save_directory, *args, **kwargs)
        path = os.path.join(save_directory, "preprocessor_config.json")
        if kwargs.get("is_main_process", True) and not os.path.exists(path):
            SegFormerImageProcessor(threshold=self.config.threshold).save_pretrained(save_directory)


def adapted_patch_weight(weight: torch.Tensor, num_channels: int) -> torch.Tensor:
    """A first patch-embedding kernel (out, C, k, k) for `num_channels` inputs instead of C.

    One channel: the sum over the C channels, so a grey image gives the features the model gave that grey
    repeated in every channel (normalised alike). Otherwise the C kernels repeated cyclically
    (R, G, B, R, ...) and scaled by C/N, so that inputs as alike as an image's colour channels give
    activations of the checkpoint's size (for two channels: R and G, times 3/2)."""
    if num_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(num_channels, device=weight.device) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / num_channels)


@torch.no_grad()
def adapt_input_channels(model: "SegFormerPreTrainedModel", num_channels: int):
    """Makes `model` take `num_channels`-channel images: its first patch embedding's kernel becomes
    `adapted_patch_weight` of the checkpoint's, and `config.num_channels` says so. Logs what it did."""
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"`num_channels` must be a positive integer, got {num_channels!r}.")
    encoder = model if isinstance(model, SegFormerModel) else model.segformer
    proj = encoder.stages[0].patch_embed.proj
    old = proj.in_channels
    if old == num_channels:
        return model
    adapted = nn.Conv2d(
        num_channels, proj.out_channels, proj.kernel_size, proj.stride, proj.padding, bias=proj.bias is not None
    ).to(device=proj.weight.device, dtype=proj.weight.dtype)
    adapted.weight.copy_(adapted_patch_weight(proj.weight, num_channels))
    if proj.bias is not None:
        adapted.bias.copy_(proj.bias)
    adapted.weight.requires_grad_(proj.weight.requires_grad)
    encoder.stages[0].patch_embed.proj = adapted
    model.config.num_channels = num_channels
    if isinstance(getattr(model, "num_features", None), list):  # a backbone: its "stem" entry is the input
        model.num_features[0] = num_channels
    how = "summed over its channels" if num_channels == 1 else f"repeated cyclically and scaled by {old}/{num_channels}"
    logger.warning(
        f"Adapted segformer.stages[0].patch_embed.proj.weight from {old} to {num_channels} input channels: the "
        f"checkpoint's kernel {how}."
    )
    return model


class SegFormerModel(SegFormerPreTrainedModel):
    """The Mix Transformer encoder. `last_hidden_state` is the stage-4 map (B, C4, H/32, W/32);
    `hidden_states` are the four stage maps at strides 4, 8, 16 and 32 (channels-last memory)."""

    def __init__(self, config: SegFormerConfig):
        super().__init__(config)
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        offsets = [sum(config.depths[:stage]) for stage in range(config.num_stages)]
        self.stages = nn.ModuleList(
            MixTransformerStage(config, stage, rates[offset : offset + depth])
            for stage, (offset, depth) in enumerate(zip(offsets, config.depths))
        )
        self.min_input_size = self._min_input_size()
        self.post_init()

    def _stage_sizes(self, size: int) -> list:
        sizes = []
        for patch_size, stride in zip(self.config.patch_sizes, self.config.strides):
            size = (size + 2 * (patch_size // 2) - patch_size) // stride + 1
            sizes.append(size)
        return sizes

    def _min_input_size(self) -> int:
        size = 1
        while any(s < max(r, 1) for s, r in zip(self._stage_sizes(size), self.config.sr_ratios)):
            size += 1
        return size

    def _check_pixel_values(self, pixel_values: torch.Tensor):
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"`pixel_values` must be a (batch, channels, height, width) tensor, got {shape}.")
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"`pixel_values` must be a floating-point tensor, got {pixel_values.dtype}: normalise the "
                "images first (e.g. with `SegformerImageProcessor`)."
            )
        if pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"`pixel_values` has {pixel_values.shape[1]} channels but the model expects "
                f"config.num_channels={self.config.num_channels}."
            )
        height, width = pixel_values.shape[-2:]
        if min(height, width) < self.min_input_size:
            raise ValueError(
                f"Input of size {height}x{width} is too small: the key/value reduction of the stages needs "
                f"images of at least {self.min_input_size}x{self.min_input_size} pixels."
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool = None,
        output_hidden_states: bool = None,
        return_dict: bool = None,
    ):
        self._check_pixel_values(pixel_values)
        check_attn_implementation(self.config)  # `set_attn_implementation` may have changed it
        output_attentions = self._resolve("output_attentions", output_attentions)
        output_hidden_states = self._resolve("output_hidden_states", output_hidden_states)
        x = pixel_values.contiguous(memory_format=torch.channels_last)
        features, attentions = (), ()
        for stage in self.stages:
            x, stage_attentions = stage(x, output_attentions)
            features += (x,)
            attentions += stage_attentions
        output = BaseModelOutput(
            last_hidden_state=x,
            hidden_states=features if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )
        return output if self._resolve("return_dict", return_dict) else output.to_tuple()


class SegFormerForSemanticSegmentation(SegFormerPreTrainedModel):
    """MiT encoder + All-MLP decoder. `logits` are (B, num_labels, H/4, W/4); with `labels` (B, H, W)
    the loss is computed on the logits upsampled to the label size."""

    def __init__(self, config: SegFormerConfig):
        super().__init__(config)
        self.segformer = SegFormerModel(config)
        self.decode_head = DECODE_HEADS[config.decoder_type](config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor = None,
        output_attentions: bool = None,
        output_hidden_states: bool = None,
        return_dict: bool = None,
    ):
        # Checked before the forward pass, so that a bad batch fails fast.
        if labels is not None and (labels.ndim != 3 or labels.shape[0] != pixel_values.shape[0]):
            raise ValueError(
                f"`labels` must be a (batch, height, width) map with batch {pixel_values.shape[0]}, "
                f"got shape {tuple(labels.shape)}."
            )
        outputs = self.segformer(
            pixel_values, output_attentions=output_attentions, output_hidden_states=True, return_dict=True
        )
        logits = self.decode_head(outputs.hidden_states)
        loss = None
        if labels is not None:
            loss = semantic_segmentation_loss(
                logits, labels, self.config.semantic_loss_ignore_index, self.config.loss_settings()
            )
        output = SemanticSegmenterOutput(
            loss=loss,
            # Contiguous like transformers' logits (`.view`, safetensors): the heads write them so, but for an int8 classifier.
            logits=logits.contiguous(),
            hidden_states=outputs.hidden_states if self._resolve("output_hidden_states", output_hidden_states) else None,
            attentions=outputs.attentions,
        )
        return output if self._resolve("return_dict", return_dict) else output.to_tuple()


class SegFormerForImageClassification(SegFormerPreTrainedModel):
    """MiT encoder + a linear classifier on the mean-pooled last stage, as the ImageNet MiT models."""

    def __init__(self, config: SegFormerConfig):
        super().__init__(config)
        self.segformer = SegFormerModel(config)
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor = None,
        output_attentions: bool = None,
        output_hidden_states: bool = None,
        return_dict: bool = None,
    ):
        outputs = self.segformer(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.last_hidden_state.mean(dim=(-2, -1)))
        loss = None
        if labels is not None:
            loss = self._classification_loss(logits, labels)
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if self._resolve("return_dict", return_dict) else output.to_tuple()

    def _classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.config.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        if problem_type == "single_label_classification":
            return F.cross_entropy(logits.float(), labels.long())  # int32 class ids are fine too
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class SegFormerBackbone(BackboneMixin, SegFormerPreTrainedModel):
    """The MiT encoder as a backbone for other heads (`AutoBackbone`): returns the stages named in
    `config.out_features`.

    A transformers backbone (`BackboneMixin`): it has the attributes that heads and `load_backbone` read,
    `backbone_type`, `stage_names`, `num_features`, `out_feature_channels`, `out_features`, `out_indices` and
    `channels`, plus `strides`. The stage selection lives in the config on every transformers version (as in
    transformers 5; 4.x kept a copy on the model), so a change of `out_features` or `out_indices` on the
    backbone or on its config is seen by both.
    """

    def __init__(self, config: SegFormerConfig):
        super().__init__(config)  # transformers 5's mixin sets `backbone_type` and checks the selection here
        self.backbone_type = BackboneType.TRANSFORMERS  # transformers 4's mixin leaves it to the subclass
        self.stage_names = config.stage_names
        # Channels per entry of `stage_names`. The patch embedding is part of stage 1, so the "stem" is
        # the input image itself.
        self.num_features = [config.num_channels, *config.hidden_sizes]
        self.segformer = SegFormerModel(config)
        self.post_init()

    @property
    def out_features(self) -> list:
        return self.config.out_features

    @out_features.setter
    def out_features(self, out_features):
        self.config.out_features = out_features  # the config realigns `out_indices`

    @property
    def out_indices(self) -> list:
        return self.config.out_indices

    @out_indices.setter
    def out_indices(self, out_indices):
        self.config.out_indices = out_indices

    @property
    def strides(self) -> list:
        """Output stride of each returned map, relative to the input."""
        return [math.prod(self.config.strides[:index]) for index in self.out_indices]

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool = None,
        output_hidden_states: bool = None,
        return_dict: bool = None,
    ):
        outputs = self.segformer(
            pixel_values, output_attentions=output_attentions, output_hidden_states=True, return_dict=True
        )
        feature_maps = tuple(outputs.hidden_states[index - 1] for index in self.out_indices)
        output = BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=outputs.hidden_states if self._resolve("output_hidden_states", output_hidden_states) else None,
            attentions=outputs.attentions,
        )
        return output if self._resolve("return_dict", return_dict) else output.to_tuple()

    def forward_with_filtered_kwargs(self, *args, **kwargs):
        """What transformers' heads on a backbone call (UperNet, DPT, Depth Anything): `forward`
        without the keyword arguments it does not take."""
        accepted = inspect.signature(self.forward).parameters
        return self(*args, **{key: value for key, value in kwargs.items() if key in accepted})


__all__ = [
    "SegFormerBackbone",
    "SegFormerForImageClassification",
    "SegFormerForSemanticSegmentation",
    "SegFormerModel",
    "SegFormerPreTrainedModel",
]
