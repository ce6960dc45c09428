"""What the web app does with its model, without the web: the model and its saved image processor loaded once,
what the model card says about it (variant, training data, metrics), the three protocols it offers, segmentation
of one image with a pass counter for a progress bar, and the example images it offers.

Segmentation is `inference.segment_images` with `InferenceSettings.from_processor`, the path of `segformer
predict`: the app's "Whole image" label map is `predict`'s, pixel for pixel.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..data.builtin import BUILTIN_CARD_NAME, BUILTIN_ID2LABEL, generate_sample
from ..demo import sample_image
from ..errors import InputError, OptionError
from ..files import open_image
from ..hub.card import find_variant
from ..image_processing_segformer import resized_size
from ..inference import MULTI_SCALE, InferenceSettings, segment_images, window_starts
from ..loading import load_image_processor, load_model, resolve_device
from ..precision import SpeedSettings, prepare_for_inference
from ..visualization import classes_present, config_palette, overlay_with_legend

WHOLE_IMAGE, SLIDING_WINDOW, MULTI_SCALE_FLIP = "Whole image", "Sliding window", "Multi-scale + flip"
PROTOCOL_NAMES = (WHOLE_IMAGE, SLIDING_WINDOW, MULTI_SCALE_FLIP)
# Without a resize in the processor, windows of this size (the ADE20K protocol's short side).
DEFAULT_WINDOW = 512
# The overlay shown in the page is enlarged (nearest neighbour) to at least this short side, so that the
# legend of a small image stays legible; the downloadable label map keeps the image's size.
DISPLAY_SHORT_SIDE = 384
# The built-in dataset's validation split starts with these images (seed 0, split offset 1, 96 pixels).
BUILTIN_EXAMPLES = dict(seed=(0, 1), size=96)


@dataclass(frozen=True)
class CardInfo:
    """What the model card says about the model; empty where there is no card."""

    title: str | None = None
    datasets: tuple = ()
    metrics: tuple = ()  # (name, value as written) pairs: the card's Evaluation table, else its model-index
    license: str | None = None


def _metric_rows(text: str) -> tuple:
    """(name, value) rows of the `| metric | value |` table under the card's "## Evaluation" heading."""
    section = re.search(r"^## Evaluation\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    if not section:
        return ()
    rows = re.findall(r"^\|\s*(.+?)\s*\|\s*(.+?)\s*\|\s*$", section.group(1), re.MULTILINE)
    return tuple((name, value) for name, value in rows if name != "metric" and not set(name) <= set("-: "))


def read_card(name: str, revision: str | None = None, token: str | None = None) -> CardInfo:
    """The card (README.md) of a model folder or Hub repository, as `CardInfo`; an empty one when there is
    none or it cannot be read (the model itself loaded, so the app works without its card)."""
    from huggingface_hub import ModelCard, hf_hub_download

    try:
        path = Path(name) / "README.md"
        if not Path(name).is_dir():
            path = Path(hf_hub_download(name, "README.md", revision=revision, token=token))
        if not path.is_file():
            return CardInfo()
        card = ModelCard.load(path, ignore_metadata_errors=True)
    except Exception:  # noqa: BLE001 - a missing or broken card only leaves the header shorter
        return CardInfo()
    data = card.data
    metrics = _metric_rows(card.text)
    if not metrics and data.eval_results:
        metrics = tuple((r.metric_name or r.metric_type, str(r.metric_value)) for r in data.eval_results)
    datasets = data.datasets or ()
    return CardInfo(
        title=getattr(data, "model_name", None),
        datasets=(datasets,) if isinstance(datasets, str) else tuple(datasets),
        metrics=metrics,
        license=data.license_name or data.license,
    )


def trained_on_builtin(card: CardInfo, id2label: dict) -> bool:
    """Whether a model was trained on the built-in dataset: its card says so (`segformer train` names the
    dataset BUILTIN_CARD_NAME there), or, without a card that names its data, it has the built-in labels."""
    if card.datasets:
        return BUILTIN_CARD_NAME in card.datasets
    return {int(k): v for k, v in id2label.items()} == BUILTIN_ID2LABEL


def example_images(builtin: bool, count: int = 4) -> list:
    """Images to try: the first validation images of the built-in dataset for a model trained on it, else
    generated scenes (`segformer demo`'s) of a few sizes and aspect ratios."""
    if builtin:
        rng = np.random.default_rng(BUILTIN_EXAMPLES["seed"])
        return [generate_sample(BUILTIN_EXAMPLES["size"], rng)[0] for _ in range(count)]
    scenes = [sample_image(512), ImageOps.mirror(sample_image(640)).crop((0, 120, 640, 520)), sample_image(384)]
    return scenes[:count]


class CountingModel:
    """The model, calling `on_pass()` before every forward pass; everything else is the model's."""

    def __init__(self, model, on_pass):
        self.model, self.on_pass = model, on_pass

    def __call__(self, *args, **kwargs):
        self.on_pass()
        return self.model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def count_passes(settings: InferenceSettings, height: int, width: int) -> int:
    """Forward passes of the model that `settings` make for an image of `height` x `width`."""
    total = 0
    for scale in settings.scales:
        size = resized_size(height, width, settings.short_side, scale, settings.align)
        windows = 1
        if settings.window is not None:
            stride = settings.stride or settings.window
            windows = len(window_starts(size[0], settings.window, stride)) * len(window_starts(size[1], settings.window, stride))
        total += windows * (2 if settings.flip else 1)
    return total


@dataclass
class Segmenter:
    """A loaded model with its processor and card: `segment` turns an image into a label map."""

    name: str
    model: object
    processor: object
    card: CardInfo = field(default_factory=CardInfo)
    window: int | None = None  # sliding window: its size (default: the processor's short side, or 512) ...
    stride: int | None = None  # ... and step (default: 3/4 of the window, the paper's 768 for 1024)
    notes: list = field(default_factory=list)  # how the model runs, for the log (as `segformer predict` says)

    @classmethod
    def load(cls, name: str, *, revision=None, token=None, device=None, dtype="fp32", window=None, stride=None):
        """The model `name` on `device` in `dtype` (prepared as `segformer predict` prepares it: a dtype the
        device would only emulate falls back to fp32, and `notes` says so), its processor and card."""
        speed, device = SpeedSettings(dtype), resolve_device(device)
        hub = dict(revision=revision, token=token)
        model = load_model(name, device=device, dtype="fp32", **hub)
        model, notes = prepare_for_inference(model, speed, device)
        processor = load_image_processor(name, **hub)
        segmenter = cls(str(name), model, processor, read_card(str(name), **hub), window, stride, notes)
        segmenter.settings(SLIDING_WINDOW)  # a bad --window / --stride fails now, not at the first image
        return segmenter

    @property
    def id2label(self) -> dict:
        return {int(k): v for k, v in self.model.config.id2label.items()}

    @property
    def palette(self) -> np.ndarray:
        return config_palette(self.model.config)

    @property
    def variant(self) -> str | None:
        return find_variant(self.model.config)

    @property
    def is_builtin(self) -> bool:
        return trained_on_builtin(self.card, self.id2label)

    def settings(self, protocol: str) -> InferenceSettings:
        """The processor's protocol (what `segformer predict` and `pipeline()` run), in windows, or at the
        paper's six scales and mirrored."""
        if protocol == WHOLE_IMAGE:  # whole, even where the processor records a sliding window
            return InferenceSettings.from_processor(self.processor, window=None, stride=None)
        if protocol == MULTI_SCALE_FLIP:
            return InferenceSettings.from_processor(self.processor, **MULTI_SCALE)
        if protocol == SLIDING_WINDOW:
            short_side = self.processor.short_side if self.processor.do_resize else None
            recorded = getattr(self.processor, "window", None), getattr(self.processor, "stride", None)
            window = next((w for w in (self.window, recorded[0], short_side) if w is not None), DEFAULT_WINDOW)
            stride = self.stride if self.stride is not None else recorded[1] if window == recorded[0] else None
            stride = stride if stride is not None else max(1, window * 3 // 4)
            return InferenceSettings.from_processor(self.processor, window=window, stride=stride)
        raise OptionError(f"Unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOL_NAMES)}.")

    def open(self, source, name: str | None = None) -> Image.Image:
        """An uploaded file (path) or image, read with an error that names it."""
        if source is None:
            raise InputError("No image: upload or drop one, or pick an example.")
        return open_image(source, name)

    def segment(self, image: Image.Image, protocol: str = WHOLE_IMAGE, on_pass=None) -> np.ndarray:
        """The (H, W) label map of `image`; `on_pass(done, total)` is called before each forward pass.
        An image that cannot be segmented (smaller than the model's smallest input, channels the model does
        not take) raises an `InputError`."""
        minimum = self.model.base_model.min_input_size
        if min(image.size) < minimum:
            # Resizing would run it, but a model cannot see anything in so few pixels.
            raise InputError(
                f"The image is {image.width}x{image.height} pixels: too small for this model, which needs at least "
                f"{minimum}x{minimum}."
            )
        settings = self.settings(protocol)
        total, done = count_passes(settings, image.height, image.width), 0

        def count():
            nonlocal done
            if on_pass is not None:
                on_pass(done, total)
            done += 1

        model = CountingModel(self.model, count)
        try:
            return segment_images(model, self.processor, [image], settings)[0]
        except ValueError as error:  # the processor's and the model's checks of the image
            raise InputError(f"This image cannot be segmented: {error}") from None

    def overlay(self, image: Image.Image, label_map: np.ndarray, alpha: float = 0.5) -> Image.Image:
        """The colours over the image with a legend of the classes present and their share, enlarged (nearest
        neighbour) to a legible size for small images."""
        factor = -(-DISPLAY_SHORT_SIDE // min(image.size))  # ceil
        if factor > 1:
            image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
            label_map = np.repeat(np.repeat(label_map, factor, axis=0), factor, axis=1)
        return overlay_with_legend(image, label_map, self.palette, self.id2label, alpha)

    def shares(self, label_map: np.ndarray) -> dict:
        """{class name: share of the pixels} of the classes present, the largest first."""
        return {str(self.id2label.get(class_id, class_id)): float(share) for class_id, share in classes_present(label_map)}

    def example_images(self, count: int = 4) -> list:
        return example_images(self.is_builtin, count)
