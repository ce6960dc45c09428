"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch, with soft, label-smoothed targets,
as DeiT trains (timm's `Mixup` in "batch" mode: one lambda per batch, each image mixed with the batch's
mirror image, CutMix instead of Mixup with probability `switch_prob`), and the soft-target cross-entropy.
No library here has them for torch tensors (timm needs torchvision), hence written out.

Randomness comes from a generator the caller seeds per step, so a resumed run mixes as the straight one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def smoothed_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) class ids -> (B, num_classes) targets: 1 - smoothing + smoothing/K on the class, smoothing/K
    elsewhere (each row sums to 1)."""
    off = smoothing / num_classes
    targets = torch.full((len(labels), num_classes), off, device=labels.device)
    return targets.scatter_(1, labels[:, None].long(), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple:
    """(top, bottom, left, right) of a box of about (1 - lam) of the image, its centre uniform, clipped to
    the image (so its area can be smaller: `mix` then corrects lambda to the area pasted)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


@dataclass
class Mixing:
    """Settings of Mixup / CutMix and label smoothing (an alpha of 0 turns that one off)."""

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.1

    def _beta(self, alpha: float, generator: torch.Generator) -> float:
        # torch's Beta has no generator argument: a Beta(a, a) from two Gammas drawn with ours.
        gammas = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
        return float(gammas[0] / gammas.sum())

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple:
        """(mixed pixels, soft targets, lambda, "mixup" | "cutmix" | "none") of a batch. The pixels are
        mixed in place of a copy; lambda is the share of each target that is the image's own label."""
        targets = smoothed_targets(labels, self.num_classes, self.smoothing)
        use_mixup, use_cutmix = self.mixup_alpha > 0, self.cutmix_alpha > 0
        if not (use_mixup or use_cutmix):
            return pixels, targets, 1.0, "none"
        cutmix = use_cutmix and (not use_mixup or float(torch.rand((), generator=generator)) < self.switch_prob)
        lam = self._beta(self.cutmix_alpha if cutmix else self.mixup_alpha, generator)
        mirrored = pixels.flip(0)
        if cutmix:
            height, width = pixels.shape[-2:]
            top, bottom, left, right = cutmix_box(height, width, lam, generator)
            pixels = pixels.clone()
            pixels[..., top:bottom, left:right] = mirrored[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        else:
            pixels = pixels * lam + mirrored * (1.0 - lam)
        return pixels, targets * lam + targets.flip(0) * (1.0 - lam), lam, "cutmix" if cutmix else "mixup"


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum(target x log-softmax): the cross-entropy with soft targets."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
