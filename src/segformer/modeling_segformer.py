"""SegFormer in PyTorch: the Mix Transformer (MiT) encoder, the All-MLP decoder and their
`transformers` model classes.

Paper: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers" (https://arxiv.org/abs/2105.15203). Original code: https://github.com/NVlabs/SegFormer
(`mmseg/models/backbones/mix_transformer.py`, `mmseg/models/decode_heads/segformer_head.py`); module
names mirror it so that original checkpoints convert by renaming.

Tokens live as (B, N, C) tensors, which is the memory layout of a channels-last (B, C, H, W) image, so
the convolutions (patch embeddings, key/value reduction, Mix-FFN) run on channels-last views of the
tokens without a copy. This file is uploaded to the Hub with the weights: it imports only torch,
`transformers`' public API and its sibling configuration and image processing files.
"""

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
from .image_processing_segformer import SegFormerImageProcessor
from .loss_segformer import semantic_segmentation_loss

# The image processor's post-processing, imported here too: transformers 4.x copies into its module cache
# only the files that the model file itself imports, from a local folder.
from .postprocessing_segformer import logits_to_label_maps  # noqa: F401

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


def to_image(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # (B, N, C) -> (B, C, H, W), a channels-last view of the same memory
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[-1]).permute(0, 3, 1, 2)


def to_tokens(image: torch.Tensor) -> torch.Tensor:
    # (B, C, H, W) -> (B, H*W, C), free when the image is channels-last
    return image.permute(0, 2, 3, 1).flatten(1, 2)


def concat_outputs(outputs: list) -> dict:
    """The fields of the outputs of several micro-batches, concatenated along the batch: tensors, and tuples
    of tensors (hidden states, attentions) entry by entry."""
    merged = {}
    for key in outputs[0].keys():
        values = [output[key] for output in outputs]
        if isinstance(values[0], torch.Tensor):
            merged[key] = torch.cat(values)
        else:
            merged[key] = tuple(torch.cat(parts) for parts in zip(*values))
    return merged


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


class PixelClassifier(nn.Conv2d):
    """The decoder's 1x1 classifier: a class of its own so that it gets a classifier's init."""

    def __init__(self, in_channels: int, num_labels: int):
        super().__init__(in_channels, num_labels, kernel_size=1)


class FuseConv(nn.Module):
    """The decoder's 1x1 conv (no bias) + BatchNorm + ReLU (the original's `ConvModule`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)


class AllMLPDecoder(nn.Module):
    """Projects each stage to `decoder_hidden_size`, upsamples to 1/4, concatenates (c4, c3, c2, c1),
    fuses with a 1x1 conv + BN + ReLU and classifies every pixel.

    Projection, bilinear upsampling and the fuse conv are all linear per pixel, so this computes the
    same function in the cheap order: each stage's slice of the fuse conv is folded into its
    projection and applied at the stage's own resolution, and the four upsampled results are summed.
    The 4 x `decoder_hidden_size`-channel concatenation at 1/4 resolution is never built; the
    parameters are those of the original layout.
    """

    def __init__(self, config: SegFormerConfig):
        super().__init__()
        width = config.decoder_hidden_size
        self.linear_c = nn.ModuleList(nn.Linear(channels, width) for channels in config.hidden_sizes)
        self.linear_fuse = FuseConv(width * config.num_stages, width)
        # Dropout2d drops whole channels, as the original decode head does.
        self.dropout = nn.Dropout2d(config.classifier_dropout_prob)
        self.linear_pred = PixelClassifier(width, config.num_labels)

    def stage_projections(self) -> list:
        """(weight, bias) per stage that map its tokens straight to its share of the fuse conv output:
        the stage's slice of the fuse conv times its projection and, in eval mode, the BatchNorm's
        per-channel scale (its shift goes into the first stage's bias), so BatchNorm costs nothing."""
        if self.linear_fuse is None:  # `fuse()` stored them in `linear_c`
            if self.training:
                raise RuntimeError("This decoder was fused for deployment (`fuse()`) and has no BatchNorm left to train.")
            return [(linear.weight, linear.bias) for linear in self.linear_c]
        width = self.linear_pred.in_channels
        fuse_weight = self.linear_fuse.conv.weight.flatten(1)  # (D, num_stages * D)
        scale, shift = (None, None) if self.training else batch_norm_affine(self.linear_fuse.bn)
        projections = []
        for stage, linear in enumerate(self.linear_c):
            # The concatenation puts the deepest stage first.
            start = (len(self.linear_c) - 1 - stage) * width
            fuse_slice = fuse_weight[:, start : start + width]
            if scale is not None:
                fuse_slice = scale[:, None] * fuse_slice
            projections.append((fuse_slice @ linear.weight, fuse_slice @ linear.bias))
        if shift is not None:
            weight, bias = projections[0]
            projections[0] = (weight, bias + shift)
        return projections

    def project(self, features: tuple) -> list:
        """Each stage's tokens mapped to its share of the fuse conv output, as (B, D, h, w) channels-last maps.
        A fused decoder calls its `linear_c` modules, so that they can be swapped for quantized ones."""
        if self.linear_fuse is None and not self.training:
            return [to_image(linear(to_tokens(f)), *f.shape[-2:]) for f, linear in zip(features, self.linear_c)]
        projections = self.stage_projections()
        return [to_image(F.linear(to_tokens(f), w, b), *f.shape[-2:]) for f, (w, b) in zip(features, projections)]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the channels-last (B, D, H, W) map. In eval mode the classifier runs as one matrix product
        per image written straight into contiguous (B, classes, H, W) logits: the 1x1 conv on a channels-last
        map takes torch's slow path, and its channels-last output would need a copy to be made contiguous.
        `linear_pred` may also be any module on (..., D) tokens (a quantized Linear)."""
        if self.training:
            return self.linear_pred(self.dropout(x))
        batch_size, _, height, width = x.shape
        tokens = to_tokens(x)  # (B, H*W, D), free: x is channels-last
        if isinstance(self.linear_pred, nn.Conv2d):
            weight = self.linear_pred.weight.flatten(1)  # (classes, D)
            # (classes, D) @ (B, D, H*W) + bias -> (B, classes, H*W)
            logits = torch.baddbmm(
                self.linear_pred.bias[None, :, None], weight.expand(batch_size, -1, -1), tokens.transpose(1, 2)
            )
            return logits.view(batch_size, -1, height, width)
        return to_image(self.linear_pred(tokens), height, width)

    def forward(self, features: tuple) -> torch.Tensor:
        fused = None
        for x in self.project(features):
            if fused is None:
                fused = x  # stage 1, at 1/4 resolution: the size of the sum
            else:
                # In place: one 1/4-resolution map for the whole sum. Autograd allows it, as neither the
                # projection nor the interpolation keeps its output for the backward pass.
                fused.add_(F.interpolate(x, size=fused.shape[-2:], mode="bilinear", align_corners=False))
        if self.training:
            fused = self.linear_fuse.bn(fused)
        return self.classify(F.relu(fused, inplace=True))

    @torch.no_grad()
    def fuse(self):
        """Store the eval-mode `stage_projections()` in `linear_c` and drop the fuse conv and BatchNorm."""
        if self.linear_fuse is None:
            return
        for linear, (weight, bias) in zip(self.linear_c, self.stage_projections()):
            linear.weight = nn.Parameter(weight)
            linear.bias = nn.Parameter(bias)
        self.linear_fuse = None


def batch_norm_affine(bn: nn.BatchNorm2d) -> tuple:
    """Eval-mode BatchNorm as y = scale * x + shift, per channel."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class SegFormerPreTrainedModel(PreTrainedModel):
    config_class = SegFormerConfig
    base_model_prefix = "segformer"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MixTransformerBlock"]

    # An eval-mode batch runs in micro-batches of at most this many input pixels (None: always whole). At
    # 512x512 the stage-1 activations of one image (16384 tokens x 4 x C channels in the Mix-FFN) already
    # fill the CPU caches: a bigger batch only adds cache misses, and the CPU attention kernel slows down
    # per image. Splitting does not change the function (eval mode has no batch statistics); the
    # concatenation costs one copy of the outputs.
    micro_batch_pixels = 512 * 512

    # Installed by the `segformer` package (its conversion.hook): turns a checkpoint of transformers' own
    # SegFormer (the official Hub ones) into (config, state dict) of ours, or returns None. Hub code runs
    # without the package, so there it stays None and loading is plain.
    checkpoint_converter = None

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
        converter = SegFormerPreTrainedModel.checkpoint_converter
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

    def _micro_batches(self, pixel_values: torch.Tensor):
        """The batch split for an eval-mode pass, or None to run it whole (training, tracing and compiling
        included: graphs with a dynamic batch cannot branch on its size)."""
        if self.training or self.micro_batch_pixels is None:
            return None
        # Before any look at the sizes, which would specialise a dynamic batch.
        if torch.jit.is_tracing() or getattr(torch.compiler, "is_compiling", lambda: False)():
            return None
        if len(pixel_values) < 2:
            return None
        size = max(1, self.micro_batch_pixels // (pixel_values.shape[-2] * pixel_values.shape[-1]))
        return pixel_values.split(size) if size < len(pixel_values) else None

    def _resolve(self, name, value):
        if value is not None:
            return value
        return getattr(self.config, name, name == "return_dict")

    @property
    def is_fused(self) -> bool:
        return any(isinstance(m, AllMLPDecoder) and m.linear_fuse is None for m in self.modules())

    @torch.no_grad()
    def fuse(self):
        """Prepare an eval-mode model for deployment: fold the decoder's BatchNorm (running statistics)
        and fuse conv into its per-stage projections, so the decoder is projections, upsampling, sum,
        ReLU and classifier. Outputs stay equal up to float rounding; the fused model can be run,
        exported and compiled, but no longer trained or saved. Returns the model."""
        if self.training:
            raise RuntimeError("`fuse()` folds the BatchNorm's running statistics: call `model.eval()` first.")
        for module in self.modules():
            if isinstance(module, AllMLPDecoder):
                module.fuse()
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
            SegFormerImageProcessor().save_pretrained(save_directory)


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
        micro_batches = self._micro_batches(pixel_values)
        if micro_batches is not None:
            outputs = [self(chunk, output_attentions, output_hidden_states, return_dict=True) for chunk in micro_batches]
            output = BaseModelOutput(**concat_outputs(outputs))
            return output if self._resolve("return_dict", return_dict) else output.to_tuple()
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
        self.decode_head = AllMLPDecoder(config)
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
        micro_batches = self._micro_batches(pixel_values)
        if micro_batches is not None:
            outputs = [
                self(chunk, output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True)
                for chunk in micro_batches
            ]
            merged = concat_outputs(outputs)
            if labels is not None:  # on the whole batch: the loss averages over all its valid pixels
                merged["loss"] = semantic_segmentation_loss(merged["logits"], labels, self.config.semantic_loss_ignore_index)
            output = SemanticSegmenterOutput(**merged)
            return output if self._resolve("return_dict", return_dict) else output.to_tuple()
        outputs = self.segformer(
            pixel_values, output_attentions=output_attentions, output_hidden_states=True, return_dict=True
        )
        logits = self.decode_head(outputs.hidden_states)
        loss = None
        if labels is not None:
            config = self.config
            loss = semantic_segmentation_loss(
                logits,
                labels,
                config.semantic_loss_ignore_index,
                loss_type=config.loss_type,
                class_weights=config.class_weights,
                focal_gamma=config.focal_gamma,
                dice_weight=config.dice_weight,
                ohem_threshold=config.ohem_threshold,
                ohem_min_kept=config.ohem_min_kept,
            )
        output = SemanticSegmenterOutput(
            loss=loss,
            # Contiguous like transformers' logits (`.view`, safetensors); the loss used the free layout.
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


class SegFormerBackbone(SegFormerPreTrainedModel):
    """The MiT encoder as a backbone for other heads (`AutoBackbone`): returns the stages named in
    `config.out_features`.

    It has the attributes of transformers' backbones (`BackboneMixin`, not imported: its home moves
    between versions) that heads and `load_backbone` read: `stage_names`, `num_features`,
    `out_feature_channels`, `out_features`, `out_indices` and `channels`, plus `strides`. They read the
    config, so they follow a change of `out_features` or `out_indices` on the backbone or its config.
    """

    def __init__(self, config: SegFormerConfig):
        super().__init__(config)
        self.segformer = SegFormerModel(config)
        self.post_init()

    @property
    def stage_names(self) -> list:
        return self.config.stage_names

    @property
    def num_features(self) -> list:
        # Channels per entry of `stage_names`. The patch embedding is part of stage 1, so the "stem" is
        # the input image itself.
        return [self.config.num_channels, *self.config.hidden_sizes]

    @property
    def out_feature_channels(self) -> dict:
        return dict(zip(self.stage_names, self.num_features))

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
    def channels(self) -> list:
        return [self.out_feature_channels[name] for name in self.out_features]

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
