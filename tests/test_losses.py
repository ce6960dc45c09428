"""The semantic-segmentation losses of `SegFormerConfig.loss_type` against reference formulas written
here: weighted cross-entropy is torch's, focal with gamma 0 is cross-entropy, Dice of a perfect prediction
is 0, OHEM keeps exactly the pixels mmseg's sampler keeps, and ignored pixels never contribute."""

import pytest
import torch
import torch.nn.functional as F

from segformer import SegFormerConfig, SegFormerForSemanticSegmentation
from segformer.loss_segformer import LossSettings, semantic_segmentation_loss

IGNORE = 255
LOSS_TYPES = ["cross_entropy", "focal", "dice", "cross_entropy+dice", "ohem"]


def batch(num_labels=4, size=(2, 12, 10), ignored=0.25, seed=0):
    """Logits at the label size (so the upsampling is the identity) and labels with ignored pixels."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(size[0], num_labels, *size[1:], generator=generator) * 2
    labels = torch.randint(0, max(num_labels, 2), size, generator=generator)
    labels[torch.rand(size, generator=generator) < ignored] = IGNORE
    return logits, labels


def per_pixel_ce(logits, labels):
    """-log softmax(logits)[true class] at the valid pixels, as a flat tensor."""
    valid = labels != IGNORE
    log_p = logits.log_softmax(dim=1).permute(0, 2, 3, 1)[valid]
    return -log_p.gather(1, labels[valid][:, None]).squeeze(1)


def loss(logits, labels, **settings):
    return semantic_segmentation_loss(logits, labels, IGNORE, LossSettings(**settings))


# ---------------------------------------------------------------------------------------------------
# Cross-entropy and class weights


def test_default_is_torch_cross_entropy_over_valid_pixels():
    logits, labels = batch()
    expected = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    assert loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(logits, labels, loss_type="cross_entropy").item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_cross_entropy_is_torchs_weighted_mean():
    logits, labels = batch()
    weights = [0.5, 2.0, 1.0, 4.0]
    expected = F.cross_entropy(logits, labels, weight=torch.tensor(weights), ignore_index=IGNORE)
    assert loss(logits, labels, class_weights=weights).item() == pytest.approx(expected.item(), rel=1e-6)
    # The choice: divided by the sum of the valid pixels' weights, not by their number (mmseg's
    # avg_non_ignore), which would be this:
    valid = labels != IGNORE
    pixel_weights = torch.tensor(weights)[labels[valid]]
    mmseg = (pixel_weights * per_pixel_ce(logits, labels)).sum() / valid.sum()
    assert loss(logits, labels, class_weights=weights).item() != pytest.approx(mmseg.item(), rel=1e-3)
    assert mmseg.item() == pytest.approx(expected.item() * pixel_weights.mean().item(), rel=1e-5)


def test_equal_class_weights_change_nothing():
    logits, labels = batch()
    assert loss(logits, labels, class_weights=[3.0] * 4).item() == pytest.approx(loss(logits, labels).item(), rel=1e-6)


def test_a_zero_weight_removes_its_class():
    logits, labels = batch()
    kept = labels.clone()
    kept[labels == 2] = IGNORE
    assert loss(logits, labels, class_weights=[1, 1, 0, 1]).item() == pytest.approx(loss(logits, kept).item(), rel=1e-6)


def test_binary_weights_weigh_the_foreground():
    logits, labels = batch(num_labels=1)
    valid = labels != IGNORE
    z, y = logits[:, 0][valid], labels[valid].float()
    bce = -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))
    assert loss(logits, labels).item() == pytest.approx(bce.mean().item(), rel=1e-5)
    w = torch.where(y == 1, 3.0, 1.0)
    expected = (w * bce).sum() / w.sum()
    assert loss(logits, labels, class_weights=[3.0]).item() == pytest.approx(expected.item(), rel=1e-5)


def test_wrong_number_of_class_weights_fails():
    logits, labels = batch()
    with pytest.raises(ValueError, match="class_weights"):
        loss(logits, labels, class_weights=[1.0, 2.0])


# ---------------------------------------------------------------------------------------------------
# Focal


@pytest.mark.parametrize("num_labels", [1, 4])
def test_focal_with_gamma_0_is_cross_entropy(num_labels):
    logits, labels = batch(num_labels)
    expected = loss(logits, labels)
    assert loss(logits, labels, loss_type="focal", focal_gamma=0.0).item() == pytest.approx(expected.item(), rel=1e-6)
    weights = [2.0] if num_labels == 1 else [0.5, 2.0, 1.0, 4.0]
    weighted = loss(logits, labels, class_weights=weights)
    focal = loss(logits, labels, loss_type="focal", focal_gamma=0.0, class_weights=weights)
    assert focal.item() == pytest.approx(weighted.item(), rel=1e-6)


def test_focal_is_the_reference_formula():
    logits, labels = batch()
    p = torch.exp(-per_pixel_ce(logits, labels))
    expected = (-((1 - p) ** 2.5) * torch.log(p)).mean()
    assert loss(logits, labels, loss_type="focal", focal_gamma=2.5).item() == pytest.approx(expected.item(), rel=1e-5)


def test_binary_focal_is_the_reference_formula():
    logits, labels = batch(num_labels=1)
    valid = labels != IGNORE
    p = torch.sigmoid(logits[:, 0][valid])
    p_true = torch.where(labels[valid] == 1, p, 1 - p)
    expected = (-((1 - p_true) ** 2) * torch.log(p_true)).mean()
    assert loss(logits, labels, loss_type="focal", focal_gamma=2.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_focal_of_a_saturated_prediction_has_a_finite_gradient():
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 200.0  # p_true == 1 in float32
    logits.requires_grad_()
    loss(logits, torch.zeros(1, 2, 2, dtype=torch.long), loss_type="focal", focal_gamma=0.5).backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------------------------------
# Dice


def one_hot_logits(labels, num_labels, scale=50.0):
    return F.one_hot(labels.clamp(max=num_labels - 1), num_labels).permute(0, 3, 1, 2).float() * scale


def test_dice_of_a_perfect_prediction_is_0():
    _, labels = batch()
    logits = one_hot_logits(labels, 4)
    assert loss(logits, labels, loss_type="dice").item() == pytest.approx(0.0, abs=1e-6)


def test_dice_of_a_perfectly_wrong_prediction_is_near_1():
    _, labels = batch()
    wrong = (labels + 1) % 4
    logits = one_hot_logits(wrong, 4)
    # Only the smoothing term is left of each class's Dice: at most 1 / (its pixel count + 1).
    counts = torch.bincount(labels[labels != IGNORE], minlength=4)
    assert loss(logits, labels, loss_type="dice").item() >= 1 - 1 / (counts.min().item() + 1) > 0.95


def test_dice_is_the_reference_formula():
    logits, labels = batch(num_labels=5)
    labels[labels == 4] = 3  # class 4 not in the labels: out of the mean
    valid = labels != IGNORE
    p = logits.softmax(dim=1).permute(0, 2, 3, 1)[valid]
    g = F.one_hot(labels[valid], 5).float()
    per_class = 1 - (2 * (p * g).sum(0) + 1) / (p.sum(0) + g.sum(0) + 1)
    assert (g.sum(0) > 0).tolist() == [True, True, True, True, False]
    expected = per_class[:4].mean()
    assert loss(logits, labels, loss_type="dice").item() == pytest.approx(expected.item(), rel=1e-5)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    weighted = (per_class[:4] * weights[:4]).sum() / weights[:4].sum()
    value = loss(logits, labels, loss_type="dice", class_weights=weights.tolist())
    assert value.item() == pytest.approx(weighted.item(), rel=1e-5)
    combined = loss(logits, labels, loss_type="cross_entropy+dice", dice_weight=0.3)
    assert combined.item() == pytest.approx(loss(logits, labels).item() + 0.3 * expected.item(), rel=1e-5)


def test_binary_dice():
    _, labels = batch(num_labels=1)
    foreground = (labels == 1).float()[:, None] * 100 - 50  # logits +-50: a perfect prediction
    assert loss(foreground, labels, loss_type="dice").item() == pytest.approx(0.0, abs=1e-6)
    assert loss(-foreground, labels, loss_type="dice").item() > 0.99
    logits, _ = batch(num_labels=1, seed=1)
    valid = labels != IGNORE
    p, g = torch.sigmoid(logits[:, 0][valid]), labels[valid].float()
    expected = 1 - (2 * (p * g).sum() + 1) / (p.sum() + g.sum() + 1)
    assert loss(logits, labels, loss_type="dice").item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------
# OHEM


def ohem_batch():
    """Two classes, every pixel of class 0, with known probabilities of class 0: 1x4x5 pixels."""
    probabilities = torch.tensor(
        [[0.05, 0.95, 0.30, 0.99, 0.69], [0.90, 0.10, 0.98, 0.60, 0.97], [0.80, 0.75, 0.20, 0.91, 0.93],
         [0.71, 0.96, 0.85, 0.94, 0.99]]  # fmt: skip
    )
    logits = torch.stack([torch.log(probabilities), torch.log1p(-probabilities)])[None].clone().requires_grad_()
    labels = torch.zeros(1, 4, 5, dtype=torch.long)
    labels[0, 3, 4] = IGNORE  # a 0.99 pixel, never kept
    return probabilities, logits, labels


def kept_pixels(logits, labels, **kwargs):
    """The (B, H, W) pixels whose logits get a gradient, and the loss."""
    value = loss(logits, labels, loss_type="ohem", **kwargs)
    logits.grad = None
    value.backward()
    return logits.grad.abs().sum(dim=1) > 0, value


def test_ohem_keeps_the_pixels_below_the_threshold():
    probabilities, logits, labels = ohem_batch()
    kept, value = kept_pixels(logits, labels, ohem_threshold=0.7, ohem_min_kept=1)
    expected = (probabilities < 0.7) & (labels[0] != IGNORE)
    assert expected.sum() == 6 and torch.equal(kept[0], expected)
    assert value.item() == pytest.approx(-torch.log(probabilities[expected]).mean().item(), rel=1e-5)


def test_ohem_keeps_at_least_min_kept_pixels():
    probabilities, logits, labels = ohem_batch()
    # 6 pixels below 0.7; min_kept 8 raises the threshold to the 9th smallest probability (0.80).
    kept, value = kept_pixels(logits, labels, ohem_threshold=0.7, ohem_min_kept=8)
    eight_hardest = (probabilities < 0.80) & (labels[0] != IGNORE)
    assert eight_hardest.sum() == 8 and torch.equal(kept[0], eight_hardest)
    assert value.item() == pytest.approx(-torch.log(probabilities[eight_hardest]).mean().item(), rel=1e-5)


def test_ohem_min_kept_counts_per_image():
    probabilities, logits, labels = ohem_batch()
    two = torch.cat([logits.detach()] * 2).requires_grad_()
    kept, _ = kept_pixels(two, torch.cat([labels] * 2), ohem_threshold=0.7, ohem_min_kept=7)
    # 2 images x 7 = 14 pixels at least, of the 12 below 0.7: the threshold rises to the 15th smallest
    # probability of the batch (0.75), keeping 14. A batch-wide min_kept of 7 would keep the 12.
    assert torch.equal(kept, torch.stack([(probabilities < 0.75) & (labels[0] != IGNORE)] * 2))
    assert kept.sum() == 14


def test_ohem_keeps_every_valid_pixel_when_there_are_no_more_than_min_kept():
    _, logits, labels = ohem_batch()
    kept, value = kept_pixels(logits, labels, ohem_threshold=0.7, ohem_min_kept=100_000)
    assert torch.equal(kept[0], labels[0] != IGNORE)
    assert value.item() == pytest.approx(loss(logits, labels).item(), rel=1e-6)


def test_ohem_with_a_threshold_of_1_is_cross_entropy():
    logits, labels = batch()
    assert loss(logits, labels, loss_type="ohem", ohem_threshold=1.0, ohem_min_kept=1).item() == pytest.approx(
        loss(logits, labels).item(), rel=1e-6
    )


# ---------------------------------------------------------------------------------------------------
# Every loss: ignored pixels take no part


OPTIONS = {
    "cross_entropy": {},
    "weighted": dict(class_weights=[0.5, 2.0, 1.0, 4.0]),
    "focal": dict(loss_type="focal"),
    "dice": dict(loss_type="dice"),
    "cross_entropy+dice": dict(loss_type="cross_entropy+dice", dice_weight=0.5),
    "ohem": dict(loss_type="ohem", ohem_threshold=0.5, ohem_min_kept=10),
}


@pytest.mark.parametrize("num_labels", [1, 4])
@pytest.mark.parametrize("name", OPTIONS)
def test_ignored_pixels_never_contribute(name, num_labels):
    options = dict(OPTIONS[name])
    if num_labels == 1 and "class_weights" in options:
        options["class_weights"] = [2.0]
    logits, labels = batch(num_labels)
    ignored = labels == IGNORE
    logits.requires_grad_()
    value = loss(logits, labels, **options)
    value.backward()
    assert torch.isfinite(value)
    assert logits.grad.abs().sum(dim=1)[ignored].max() == 0
    assert logits.grad.abs().sum(dim=1)[~ignored].max() > 0
    # Anything at the ignored pixels leaves the loss as it is.
    changed = logits.detach().clone()
    changed[ignored[:, None].expand_as(changed)] = 1e4
    assert loss(changed, labels, **options).item() == pytest.approx(value.item(), rel=1e-6)


@pytest.mark.parametrize("num_labels", [1, 4])
@pytest.mark.parametrize("name", OPTIONS)
def test_a_batch_without_valid_pixels_has_loss_0(name, num_labels):
    options = dict(OPTIONS[name])
    if num_labels == 1 and "class_weights" in options:
        options["class_weights"] = [2.0]
    logits = torch.randn(2, num_labels, 6, 6, requires_grad=True)
    value = loss(logits, torch.full((2, 6, 6), IGNORE), **options)
    value.backward()
    assert value.item() == 0.0 and logits.grad.abs().sum() == 0


# ---------------------------------------------------------------------------------------------------
# The model reads the config


@pytest.mark.parametrize("name", OPTIONS)
def test_the_model_loss_is_the_configured_loss(tiny_config, name):
    options = OPTIONS[name]
    model = SegFormerForSemanticSegmentation(tiny_config(num_labels=4, **options)).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    _, labels = batch(4, size=(2, 64, 64))
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
        expected = loss(output.logits, labels, **options)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["focal", "weighted"])
def test_an_eval_mode_batch_of_large_images_gets_the_configured_loss_on_the_whole_batch(tiny_config, name):
    # Two 512x512 images: a batch that inference splits into micro-batches on a CPU. The model's forward
    # does not split, so its loss is the configured one over the whole batch (it once fell back to plain
    # cross-entropy on batches it split).
    model = SegFormerForSemanticSegmentation(tiny_config(num_labels=4, **OPTIONS[name])).eval()
    torch.nn.init.normal_(model.decode_head.linear_pred.weight, std=1.0)  # confident logits: losses differ
    pixel_values = torch.randn(2, 3, 512, 512)
    _, labels = batch(4, size=(2, 512, 512))
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
        expected = loss(output.logits, labels, **OPTIONS[name])
        cross_entropy = loss(output.logits, labels)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert abs(output.loss.item() - cross_entropy.item()) > 1e-2  # the configured loss is not plain CE here


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(loss_type="lovasz"), "loss_type"),
        (dict(num_labels=4, class_weights=[1.0, 2.0]), "class_weights"),
        (dict(num_labels=2, class_weights=[1.0, -2.0]), "class_weights"),
        (dict(num_labels=2, class_weights=[0.0, 0.0]), "class_weights"),
        (dict(num_labels=2, class_weights=["a", 1]), "class_weights"),
        (dict(focal_gamma=-1.0), "focal_gamma"),
        (dict(dice_weight=-0.5), "dice_weight"),
        (dict(ohem_threshold=1.5), "ohem_threshold"),
        (dict(ohem_min_kept=0), "ohem_min_kept"),
    ],
)
def test_invalid_loss_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SegFormerConfig(**overrides)


def test_loss_fields_survive_save_and_load(tiny_config, tmp_path):
    config = tiny_config(num_labels=3, loss_type="ohem", class_weights=[1, 2, 3], ohem_min_kept=7)
    config.save_pretrained(tmp_path)
    loaded = SegFormerConfig.from_pretrained(tmp_path)
    assert (loaded.loss_type, loaded.class_weights, loaded.ohem_min_kept) == ("ohem", [1.0, 2.0, 3.0], 7)
