"""Post-processing: the fast label maps of `postprocessing_segformer` against the exact definition (logits
resized bilinearly to the model-input size, then to the image size, then the argmax), written out here the
slow way. The rule: every pixel whose top-2 margin in the exact computation is at least 1e-4 gets the same
label, and at least 99.99% of all pixels do."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segformer import SegFormerForSemanticSegmentation, SegFormerImageProcessor
from segformer.demo import sample_image
from segformer.inference import InferenceSettings, segment, sliding_window_logits
from segformer import postprocessing_segformer
from segformer.postprocessing_segformer import chain_weights, logits_to_label_maps

MARGIN = 1e-4
MIN_AGREEMENT = 0.9999


def exact_label_map(logits: torch.Tensor, target_size, input_size=None):
    """The definition, slowly: (label map, top-2 margin) of (C, h, w) logits, resized at full resolution."""
    resized = logits[None].float()
    for size in ([input_size] if input_size else []) + [target_size]:
        if tuple(resized.shape[-2:]) != tuple(size):
            resized = F.interpolate(resized, size=tuple(size), mode="bilinear", align_corners=False)
    resized = resized[0]
    if len(resized) == 1:
        return (resized[0] > 0).long(), resized[0].abs()
    top2 = resized.topk(2, dim=0).values
    return resized.argmax(0), top2[0] - top2[1]


def assert_rule(fast: torch.Tensor, logits: torch.Tensor, target_size, input_size=None):
    expected, margin = exact_label_map(logits, target_size, input_size)
    assert fast.shape == expected.shape and fast.dtype == torch.int64
    differ = fast != expected
    assert not differ[margin >= MARGIN].any(), f"{int(differ[margin >= MARGIN].sum())} clear pixels differ"
    assert 1 - differ.float().mean().item() >= MIN_AGREEMENT, f"{int(differ.sum())} of {differ.numel()} pixels differ"


def smooth_logits(num_classes: int, height: int, width: int, scale: float = 4.0) -> torch.Tensor:
    """Logits with regions and boundaries like a trained model's: noise upsampled from a coarse grid."""
    coarse = torch.randn(1, num_classes, max(2, height // 6), max(2, width // 6)) * scale
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]


@pytest.mark.parametrize(
    "num_classes, logits_size, input_size, target_size",
    [
        (5, (8, 10), (32, 40), (30, 41)),  # upscale, odd target
        (19, (16, 24), (64, 96), (37, 53)),  # downscale from the input size
        (150, (32, 44), (128, 176), (120, 160)),  # the ADE20K protocol's ratios
        (300, (12, 20), (48, 80), (50, 83)),  # more than 256 classes (16-bit label maps)
        (40_000, (3, 4), None, (7, 9)),  # more classes than a 16-bit integer holds
        (7, (13, 9), None, (13, 9)),  # no resize at all
        (4, (9, 7), None, (100, 3)),  # one step, extreme aspect
    ],
)
@pytest.mark.parametrize("kind", ["smooth", "random"])
def test_label_maps_follow_the_exact_definition(num_classes, logits_size, input_size, target_size, kind):
    logits = smooth_logits(num_classes, *logits_size) if kind == "smooth" else torch.randn(num_classes, *logits_size)
    fast = logits_to_label_maps(logits[None], [target_size], [input_size] if input_size else None)[0]
    assert_rule(fast, logits, target_size, input_size)


@pytest.mark.parametrize("input_size, target_size", [((64, 96), (61, 90)), ((64, 96), (200, 301))])
def test_one_label_is_foreground_where_the_resized_logit_is_positive(input_size, target_size):
    logits = smooth_logits(1, 16, 24)
    fast = logits_to_label_maps(logits[None], [target_size], [input_size])[0]
    assert set(fast.unique().tolist()) == {0, 1}
    assert_rule(fast, logits, target_size, input_size)


def test_a_batch_gets_one_map_per_image_at_its_own_size():
    logits = smooth_logits(6, 10, 14)[None].repeat(2, 1, 1, 1)
    sizes, inputs = [(37, 50), (20, 29)], [(40, 56), (40, 56)]
    for fast, target, source in zip(logits_to_label_maps(logits, sizes, inputs), sizes, inputs):
        assert_rule(fast, logits[0], target, source)


def test_random_logits_take_every_branch_and_follow_the_definition(monkeypatch):
    # Boundaries of two classes, junctions of three or more, bounds that fail and the plausible classes
    # scored there: each branch is reached here, and the labels still follow the definition.
    candidates_scored, plausible = [], []
    score, score_plausible = postprocessing_segformer._score, postprocessing_segformer._score_plausible

    def spy_score(flat, pixels, candidates, labels):
        candidates_scored.append(len(candidates))
        return score(flat, pixels, candidates, labels)

    def spy_plausible(flat, pixels, found, labels):
        plausible.append(len(found))
        return score_plausible(flat, pixels, found, labels)

    monkeypatch.setattr(postprocessing_segformer, "_score", spy_score)
    monkeypatch.setattr(postprocessing_segformer, "_score_plausible", spy_plausible)
    torch.manual_seed(1)
    logits = torch.randn(150, 32, 44) * 0.1
    fast = logits_to_label_maps(logits[None], [(120, 160)], [(128, 176)])[0]
    assert_rule(fast, logits, (120, 160), (128, 176))
    assert candidates_scored[0] == 2 and max(candidates_scored) >= 9 and sum(plausible) > 0


def test_ties_go_to_the_lowest_class_as_argmax():
    logits = torch.zeros(4, 6, 6)
    logits[2, :, 3:] = 1.0  # classes 0, 1, 3 tie everywhere; class 2 wins on the right
    fast = logits_to_label_maps(logits[None], [(24, 24)], [(24, 24)])[0]
    expected, _ = exact_label_map(logits, (24, 24), (24, 24))
    assert torch.equal(fast, expected)


def test_composed_weights_are_the_two_resizes():
    weights = chain_weights(9, [36, 31])  # (9, 31)
    plane = torch.randn(9, dtype=torch.float64)
    two_steps = F.interpolate(F.interpolate(plane[None, None], size=36, mode="linear"), size=31, mode="linear")[0, 0]
    torch.testing.assert_close(plane @ weights, two_steps)
    torch.testing.assert_close(weights.sum(0), torch.ones(31, dtype=torch.float64))


@pytest.fixture(scope="module")
def b0_like_model():
    """A small SegFormer with 150 classes: real model outputs, not hand-made logits."""
    torch.manual_seed(0)
    from segformer import SegFormerConfig

    config = SegFormerConfig(
        hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 4],
        decoder_hidden_size=64, num_labels=150,
    )  # fmt: skip
    return SegFormerForSemanticSegmentation(config).eval()


@pytest.mark.parametrize("size", [(97, 131), (160, 120), (64, 64)])
def test_real_model_outputs_through_the_processor(b0_like_model, size):
    processor = SegFormerImageProcessor(short_side=128)
    image = sample_image(max(size)).resize(size[::-1], Image.BILINEAR)
    inputs = processor(image, return_tensors="pt")
    with torch.inference_mode():
        outputs = b0_like_model(**inputs)
    fast = processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0]
    assert_rule(fast, outputs.logits[0], size, tuple(inputs["pixel_values"].shape[-2:]))


def test_segment_follows_the_definition(b0_like_model):
    pixel_values = SegFormerImageProcessor().pixel_values(sample_image(90).resize((90, 70)), do_resize=False)
    settings = InferenceSettings(short_side=96)
    fast = segment(b0_like_model, [pixel_values], settings)[0]
    inputs = F.interpolate(pixel_values[None], size=(96, 128), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        logits = b0_like_model(inputs).logits[0]
    assert_rule(fast, logits, (70, 90), (96, 128))


@pytest.mark.parametrize("window, stride", [(64, 48), (48, 48), (128, 64)])
def test_sliding_windows_follow_the_definition(b0_like_model, window, stride):
    # The windows' logits averaged at the input size and resized to the image (what the sliding-window
    # protocol defines), against the mosaic of the windows' own logits that `segment` post-processes.
    pixel_values = SegFormerImageProcessor().pixel_values(sample_image(90).resize((90, 70)), do_resize=False)
    settings = InferenceSettings(short_side=96, window=window, stride=stride)
    fast = segment(b0_like_model, [pixel_values], settings)[0]
    inputs = F.interpolate(pixel_values[None], size=(96, 128), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        logits = sliding_window_logits(b0_like_model, inputs, window, stride)[0]
    assert_rule(fast, logits, (70, 90))
