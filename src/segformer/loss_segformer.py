"""Semantic-segmentation losses of SegFormer: cross-entropy (the paper's), weighted cross-entropy, focal
(Lin et al. 2017), soft Dice, cross-entropy + Dice and OHEM cross-entropy (mmseg's `OHEMPixelSampler`),
chosen by `SegFormerConfig.loss_type` and read by the model's own forward pass, so that `segformer train`,
`transformers.Trainer` and the Hub code train with the same loss.

`LossSettings` is the loss's whole configuration in one object: the config stores its fields (flat, as
JSON), hands them over with `SegFormerConfig.loss_settings()`, and every check of them lives here. A new loss
touches this file and the config's argument list.

This file is uploaded to the Hub with the model files: it imports only torch.
"""

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

# The label value that the loss and the metrics skip: unlabelled pixels and the padding of a batch. The
# config's `semantic_loss_ignore_index` defaults to it; code with no config at hand (datasets, transforms,
# the image processor) uses it (as `configuration_segformer.IGNORE_INDEX`).
IGNORE_INDEX = 255

# `loss_type` values of the semantic-segmentation loss.
LOSS_TYPES = ("cross_entropy", "focal", "dice", "cross_entropy+dice", "ohem")


@dataclass(frozen=True)
class LossSettings:
    """The semantic-segmentation loss and its parameters (the `SegFormerConfig` fields of the same names;
    see its docstring for each). `check(num_labels)` raises a ValueError naming the bad field."""

    loss_type: str = "cross_entropy"
    class_weights: tuple | None = None
    focal_gamma: float = 2.0
    dice_weight: float = 1.0
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 100_000

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(field.name for field in fields(cls))

    def to_dict(self) -> dict:
        """The fields as config values (class weights as a list, as JSON keeps them)."""
        values = asdict(self)
        if values["class_weights"] is not None:
            values["class_weights"] = list(values["class_weights"])
        return values

    def check(self, num_labels: int):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"`loss_type` must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}.")
        if self.class_weights is not None:
            weights = self.class_weights
            if any(not math.isfinite(w) or w < 0 for w in weights) or not any(w > 0 for w in weights):
                raise ValueError(f"`class_weights` must be non-negative numbers, not all 0, got {list(weights)!r}.")
            if len(weights) != num_labels:
                raise ValueError(
                    f"`class_weights` has {len(weights)} entries but the model has num_labels={num_labels}: "
                    "give one weight per label."
                )
        for name in ("focal_gamma", "dice_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.")
        threshold = self.ohem_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"`ohem_threshold` must be a probability in (0, 1], got {threshold!r}.")
        if isinstance(self.ohem_min_kept, bool) or not isinstance(self.ohem_min_kept, int) or self.ohem_min_kept < 1:
            raise ValueError(f"`ohem_min_kept` must be a positive integer, got {self.ohem_min_kept!r}.")
        return self


def pixel_rows(logits: torch.Tensor) -> torch.Tensor:
    # (B, C, H, W) -> (B*H*W, C), free when the logits are channels-last
    return logits.permute(0, 2, 3, 1).flatten(0, 2)


# Added to both sides of the Dice ratio: a class with no pixel and no predicted mass scores 0, and the
# loss stays defined on empty batches (the usual "smooth" term of soft Dice).
DICE_SMOOTH = 1.0


def semantic_segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    settings: LossSettings = LossSettings(),
) -> torch.Tensor:
    """Loss on logits upsampled to the label size; pixels labelled `ignore_index` take no part in it
    (nor get a gradient). `settings` says which loss (`SegFormerConfig.loss_settings()`).

    Pixel losses (cross-entropy, focal, OHEM) are averaged over the valid pixels weighted by their
    class's weight (torch's weighted mean: sum of w * loss over sum of w, so that equal weights change
    nothing; mmseg's `avg_non_ignore` divides by the pixel count instead, i.e. its loss is ours times the
    mean weight). One label (`logits` with one channel): binary cross-entropy, focal and Dice on the
    foreground probability; `class_weights` is then the foreground's weight."""
    loss_type, class_weights = settings.loss_type, settings.class_weights
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False).float()
    valid = labels != ignore_index
    if loss_type == "cross_entropy" and class_weights is None:
        num_valid = valid.sum().clamp(min=1)
        if logits.shape[1] == 1:
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
            return (loss * valid).sum() / num_valid
        # Classes as the last dim of a (B*H*W, C) matrix: the memory order of channels-last logits, and the
        # layout log-softmax is fast on; cross-entropy over dim 1 of a channels-last map copies it first.
        logits = pixel_rows(logits)
        return F.cross_entropy(logits, labels.flatten().long(), ignore_index=ignore_index, reduction="sum") / num_valid
    # The valid pixels only, as (N, C) logits and (N,) targets: the ignored ones are out of every sum
    # below, and indexing routes no gradient to them.
    valid = valid.flatten()
    logits = pixel_rows(logits)[valid]
    target = labels.flatten()[valid].long()
    weights = _pixel_weights(class_weights, target, logits.shape[1], logits.device)
    if loss_type == "dice":
        return _dice_loss(logits, target, class_weights)
    nll = _pixel_nll(logits, target)
    if loss_type == "focal":
        # (1 - p_true)^gamma with p_true = exp(-nll); expm1 keeps it exact for confident pixels.
        return _weighted_mean(nll * (-torch.expm1(-nll)).clamp(min=1e-12) ** settings.focal_gamma, weights)
    if loss_type == "ohem":
        kept = _ohem_kept(nll.detach(), settings.ohem_threshold, settings.ohem_min_kept * labels.shape[0])
        return _weighted_mean(nll[kept], weights[kept])
    loss = _weighted_mean(nll, weights)
    if loss_type == "cross_entropy+dice":
        loss = loss + settings.dice_weight * _dice_loss(logits, target, class_weights)
    elif loss_type != "cross_entropy":
        raise ValueError(f"Unknown `loss_type` {loss_type!r}.")
    return loss


def _pixel_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log p(true class) of each pixel: (N, C) logits, softmax; (N, 1), sigmoid of the foreground."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none")
    return F.cross_entropy(logits, target, reduction="none")


def _pixel_weights(class_weights, target: torch.Tensor, num_labels: int, device) -> torch.Tensor:
    """Each pixel's weight: its class's (one label: the foreground's, background 1), else 1."""
    if class_weights is None:
        return torch.ones(target.shape, device=device)
    class_weights = torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    if len(class_weights) != num_labels:
        raise ValueError(f"`class_weights` has {len(class_weights)} entries but the logits have {num_labels} labels.")
    if num_labels == 1:
        return torch.where(target == 1, class_weights[0], torch.ones((), device=device))
    return class_weights[target]


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # 0 (with a graph) when no pixel counts.
    return (values * weights).sum() / weights.sum().clamp(min=torch.finfo(torch.float32).tiny)


def _ohem_kept(nll: torch.Tensor, threshold: float, min_kept: int) -> torch.Tensor:
    """mmseg's OHEMPixelSampler: the pixels whose true-class probability is below `threshold`, raised to
    the probability of the (min_kept+1)-th least confident pixel when fewer than `min_kept` are below it.
    When there are no more than `min_kept` valid pixels all are kept (mmseg drops the most confident)."""
    probability = torch.exp(-nll)
    if min_kept >= len(probability):
        return torch.ones_like(probability, dtype=torch.bool)
    kth = torch.kthvalue(probability, min_kept + 1).values
    return probability < torch.maximum(kth, torch.tensor(threshold, device=probability.device))


def _dice_loss(logits: torch.Tensor, target: torch.Tensor, class_weights=None) -> torch.Tensor:
    """1 - soft Dice over the batch's valid pixels, per class, averaged over the classes present in the
    labels (weighted by `class_weights`): a class absent from the batch would score ~0 and dilute the
    mean by the number of labels. One label: the foreground's Dice, present or not."""
    if logits.shape[1] == 1:
        probability, truth = torch.sigmoid(logits), target[:, None].float()
    else:
        probability, truth = logits.softmax(dim=1), F.one_hot(target, logits.shape[1]).float()
    intersection = (probability * truth).sum(0)
    cardinality = probability.sum(0) + truth.sum(0)
    loss = 1 - (2 * intersection + DICE_SMOOTH) / (cardinality + DICE_SMOOTH)
    if logits.shape[1] == 1:
        return loss[0]
    weights = (truth.sum(0) > 0).float()
    if class_weights is not None:
        weights = weights * torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    return _weighted_mean(loss, weights)


__all__ = ["IGNORE_INDEX", "LOSS_TYPES", "LossSettings", "semantic_segmentation_loss"]
