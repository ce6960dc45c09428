"""SegFormer's decode heads: the All-MLP decoder of the paper, and the deployment module `fuse()` swaps in.

Paper: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers" (https://arxiv.org/abs/2105.15203), section 3.2. Original code: https://github.com/NVlabs/SegFormer
(`mmseg/models/decode_heads/segformer_head.py`); parameter names mirror it, so original checkpoints convert by
renaming.

Each decode head kind is a training module that reads like its paper and has a `fused()` method returning
its deployment module (a `DeploymentHead`): BatchNorm folded into the weights, the classifier a Linear, every
matrix product a Linear module that dynamic int8 quantization can swap. `DECODE_HEADS` maps
`config.decoder_type` to the training module: "all_mlp" (`AllMLPDecoder`), or "mmseg" (`MMSegDecoder`,
mmsegmentation's `SegformerHead`, the head of most SegFormers trained with mmsegmentation:
`mmseg/models/decode_heads/segformer_head.py` of https://github.com/open-mmlab/mmsegmentation, 0.x and 1.x).

The decoders take the encoder's four feature maps, (B, C_i, H_i, W_i) views of channels-last memory.
This file is uploaded to the Hub with the model files: it imports only torch.
"""

import torch
import torch.nn.functional as F
from torch import nn


def to_image(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # (B, N, C) -> (B, C, H, W), a channels-last view of the same memory
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[-1]).permute(0, 3, 1, 2)


def to_tokens(image: torch.Tensor) -> torch.Tensor:
    # (B, C, H, W) -> (B, H*W, C), free when the image is channels-last
    return image.permute(0, 2, 3, 1).flatten(1, 2)


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize without corner alignment, as the original; no copy when the size is right."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def batch_norm_affine(bn: nn.BatchNorm2d) -> tuple:
    """Eval-mode BatchNorm as y = scale * x + shift, per channel."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class PixelClassifier(nn.Conv2d):
    """A decoder's 1x1 classifier: a class of its own so that it gets a classifier's init."""

    def __init__(self, in_channels: int, num_labels: int):
        super().__init__(in_channels, num_labels, kernel_size=1)


class ConvBN(nn.Module):
    """1x1 conv without bias + BatchNorm: the original's `ConvModule` (its ReLU is applied by the caller)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)


class AllMLPDecoder(nn.Module):
    """The paper's decoder: each stage projected to `decoder_hidden_size` channels by a Linear, upsampled to
    1/4 resolution, concatenated (c4, c3, c2, c1), fused by a 1x1 conv + BatchNorm + ReLU, dropout, and a
    1x1 classifier.

    Projection, bilinear upsampling and the fuse conv are all linear per pixel, so `forward` computes the
    same function in the cheap order: each stage's slice of the fuse conv is composed with its projection and
    applied at the stage's own resolution, and the four upsampled results are summed. The 4 x D-channel
    concatenation at 1/4 resolution (the largest tensor and most of the FLOPs of the original order) is never
    built; the parameters keep the original layout.
    """

    def __init__(self, config):
        super().__init__()
        width = config.decoder_hidden_size
        self.linear_c = nn.ModuleList(nn.Linear(channels, width) for channels in config.hidden_sizes)
        self.linear_fuse = ConvBN(width * config.num_stages, width)
        # Dropout2d drops whole channels, as the original decode head does.
        self.dropout = nn.Dropout2d(config.classifier_dropout_prob)
        self.linear_pred = PixelClassifier(width, config.num_labels)

    def stage_projections(self) -> list:
        """(weight, bias) per stage: its projection followed by its slice of the fuse conv."""
        width = self.linear_pred.in_channels
        fuse_weight = self.linear_fuse.conv.weight.flatten(1)  # (D, num_stages * D)
        projections = []
        for stage, linear in enumerate(self.linear_c):
            # The concatenation puts the deepest stage first.
            start = (len(self.linear_c) - 1 - stage) * width
            fuse_slice = fuse_weight[:, start : start + width]
            projections.append((fuse_slice @ linear.weight, fuse_slice @ linear.bias))
        return projections

    def forward(self, features: tuple) -> torch.Tensor:
        fused = None
        for x, (weight, bias) in zip(features, self.stage_projections()):
            x = to_image(F.linear(to_tokens(x), weight, bias), *x.shape[-2:])
            # In place into stage 1's map (1/4 resolution, the size of the sum): autograd allows it, as neither
            # the projection nor the interpolation keeps its output for the backward pass.
            fused = x if fused is None else fused.add_(upsample(x, fused.shape[-2:]))
        x = F.relu_(self.linear_fuse.bn(fused))  # in place: BatchNorm keeps its input, not its output, for backward
        return classify(self.linear_pred, self.dropout(x))

    @torch.no_grad()
    def fused(self) -> "FusedAllMLPDecoder":
        """The deployment module computing this decoder's eval-mode function."""
        scale, shift = batch_norm_affine(self.linear_fuse.bn)
        projections = [(scale[:, None] * weight, scale * bias) for weight, bias in self.stage_projections()]
        weight, bias = projections[0]
        projections[0] = (weight, bias + shift)  # the BatchNorm's shift, once
        return FusedAllMLPDecoder(projections, self.linear_pred)


class DeploymentHead(nn.Module):
    """Base of the modules `fuse()` swaps in for a decode head: inference only, not trainable or savable."""

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("This decode head was fused for deployment (`fuse()`) and can no longer be trained.")
        return super().train(False)


def linear_from(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    linear.weight.copy_(weight)
    linear.bias.copy_(bias)
    return linear


def classify(classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of the channels-last (B, D, H, W) map by a 1x1 classifier: a training head's `PixelClassifier`
    or a deployment head's Linear. A float one runs as one matrix product per image written straight into
    contiguous (B, classes, H, W) logits (a conv or a Linear on the tokens gives channels-last logits, and
    making them contiguous costs a copy as large as the logits); a quantized Linear (int8) is called on
    the tokens."""
    batch_size, _, height, width = x.shape
    tokens = to_tokens(x)  # (B, H*W, D), free when x is channels-last
    if not isinstance(classifier, PixelClassifier) and type(classifier) is not nn.Linear:
        return to_image(classifier(tokens), height, width)
    # (classes, D) @ (B, D, H*W) + bias -> (B, classes, H*W)
    weight = classifier.weight.flatten(1).expand(batch_size, -1, -1)
    return torch.baddbmm(classifier.bias[None, :, None], weight, tokens.transpose(1, 2)).view(batch_size, -1, height, width)


class FusedAllMLPDecoder(DeploymentHead):
    """`AllMLPDecoder` in eval mode with its BatchNorm (running statistics) and fuse conv folded into the
    per-stage projections: Linear per stage, upsample, sum, ReLU, Linear classifier."""

    def __init__(self, projections: list, classifier: nn.Conv2d):
        super().__init__()
        self.linear_c = nn.ModuleList(linear_from(weight, bias) for weight, bias in projections)
        self.linear_pred = linear_from(classifier.weight.flatten(1), classifier.bias)

    def forward(self, features: tuple) -> torch.Tensor:
        fused = None
        for x, linear in zip(features, self.linear_c):
            x = to_image(linear(to_tokens(x)), *x.shape[-2:])
            fused = x if fused is None else fused.add_(upsample(x, fused.shape[-2:]))
        return classify(self.linear_pred, F.relu_(fused))


class MMSegDecoder(nn.Module):
    """mmsegmentation's `SegformerHead`: each stage through a 1x1 conv + BatchNorm + ReLU to
    `decoder_hidden_size` channels, upsampled to stage 1's size (1/4), concatenated stage 1 first
    (c1, c2, c3, c4), fused by a 1x1 conv + BatchNorm + ReLU, dropout, and a 1x1 classifier. The module names
    are mmseg's (`convs.i`, `fusion_conv`), but for its `conv_seg`, which is `linear_pred` as in every head here.

    The ReLU on each stage's branch comes before the upsampling, so, unlike the All-MLP decoder's, the
    branches do not compose with the fuse conv: the 4 x D-channel concatenation is built, as mmseg builds it.
    """

    def __init__(self, config):
        super().__init__()
        width = config.decoder_hidden_size
        self.convs = nn.ModuleList(ConvBN(channels, width) for channels in config.hidden_sizes)
        self.fusion_conv = ConvBN(width * config.num_stages, width)
        self.dropout = nn.Dropout2d(config.classifier_dropout_prob)
        self.linear_pred = PixelClassifier(width, config.num_labels)

    def forward(self, features: tuple) -> torch.Tensor:
        size = features[0].shape[-2:]
        branches = [upsample(F.relu(branch.bn(branch.conv(x))), size) for branch, x in zip(self.convs, features)]
        x = torch.cat(branches, dim=1)  # (B, 4D, H/4, W/4)
        x = F.relu(self.fusion_conv.bn(self.fusion_conv.conv(x)))  # (B, D, H/4, W/4)
        return classify(self.linear_pred, self.dropout(x))

    @torch.no_grad()
    def fused(self) -> "FusedMMSegDecoder":
        """The deployment module computing this decoder's eval-mode function."""
        return FusedMMSegDecoder([conv_bn_linear(branch) for branch in self.convs], conv_bn_linear(self.fusion_conv), self.linear_pred)


def conv_bn_linear(module: ConvBN) -> nn.Linear:
    """The Linear equal to an eval-mode 1x1 conv + BatchNorm on tokens."""
    scale, shift = batch_norm_affine(module.bn)
    return linear_from(scale[:, None] * module.conv.weight.flatten(1), shift)


class FusedMMSegDecoder(DeploymentHead):
    """`MMSegDecoder` in eval mode with each BatchNorm folded into its conv, on channels-last tokens: Linear +
    ReLU per stage, upsample, concatenate, Linear + ReLU, Linear classifier."""

    def __init__(self, branches: list, fusion: nn.Linear, classifier: nn.Conv2d):
        super().__init__()
        self.convs = nn.ModuleList(branches)
        self.fusion_conv = fusion
        self.linear_pred = linear_from(classifier.weight.flatten(1), classifier.bias)

    def forward(self, features: tuple) -> torch.Tensor:
        height, width = features[0].shape[-2:]
        branches = [
            to_tokens(upsample(to_image(F.relu(linear(to_tokens(x))), *x.shape[-2:]), (height, width)))
            for linear, x in zip(self.convs, features)
        ]
        x = F.relu(self.fusion_conv(torch.cat(branches, dim=-1)))  # (B, N, 4D) -> (B, N, D)
        return classify(self.linear_pred, to_image(x, height, width))


# `config.decoder_type` -> decode head.
DECODE_HEADS = {"all_mlp": AllMLPDecoder, "mmseg": MMSegDecoder}


__all__ = [
    "AllMLPDecoder", "DECODE_HEADS", "DeploymentHead", "FusedAllMLPDecoder", "FusedMMSegDecoder", "MMSegDecoder",
    "PixelClassifier",
]  # fmt: skip
