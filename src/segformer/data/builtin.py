"""The built-in dataset: shapes filled with a texture that names their class, in random colours on a
smooth random background, so only the texture (not the colour) tells the classes apart. Generated, so
the default training run and the tests need no download."""

import numpy as np
from PIL import Image, ImageDraw

BUILTIN_DATASET = "builtin"
BUILTIN_CARD_NAME = "segformer-builtin-textures"  # how model cards name it: it is on no Hub
BUILTIN_ID2LABEL = {0: "background", 1: "stripes", 2: "checkers", 3: "dots"}


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) pattern in {0, 1} of one texture class, with random scale, phase and angle."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(8, 12)
        return (((xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform()) % 1.0 < 0.5).astype(np.float32)
    if kind == "checkers":
        cell = rng.integers(5, 9)
        return ((xx // cell + yy // cell) % 2).astype(np.float32)
    if kind == "dots":
        period = rng.uniform(8, 11)
        dy, dx = (yy / period + rng.uniform()) % 1.0 - 0.5, (xx / period + rng.uniform()) % 1.0 - 0.5
        return (np.hypot(dy, dx) < 0.28).astype(np.float32)
    raise ValueError(f"Unknown texture {kind!r}.")


def _color_pair(rng: np.random.Generator) -> tuple:
    # The second colour is far from the first in every channel, so every texture stays visible.
    first = rng.integers(0, 256, 3)
    second = (first + 128 + rng.integers(-40, 41, 3)) % 256
    return first.astype(np.float32), second.astype(np.float32)


SHAPES = ("ellipse", "rectangle", "triangle")


def _shape_mask(size: int, rng: np.random.Generator, shape: int | None = None, extent: tuple = (0.3, 0.6)) -> np.ndarray:
    """A boolean mask of one ellipse, rectangle or triangle (`SHAPES[shape]`, random when None), each side
    `extent` (fractions) of the image wide."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    width, height = rng.uniform(*extent, 2) * size
    left, top = rng.uniform(0, size - width), rng.uniform(0, size - height)
    box = [left, top, left + width, top + height]
    shape = rng.integers(3) if shape is None else shape
    if shape == 0:
        draw.ellipse(box, fill=1)
    elif shape == 1:
        draw.rectangle(box, fill=1)
    else:
        draw.polygon([(left, top + height), (left + width / 2, top), (left + width, top + height)], fill=1)
    return np.asarray(canvas, dtype=bool)


TEXTURES = tuple(BUILTIN_ID2LABEL.values())[1:]


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, 3) float image: a smooth two-colour gradient with noise, the backdrop of every sample."""
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    gradient = ramp[None, :, None] if rng.uniform() < 0.5 else ramp[:, None, None]
    start, end = _color_pair(rng)
    return start + (end - start) * 0.35 * gradient + rng.normal(0, 6, (size, size, 3))


def paint(image: np.ndarray, mask: np.ndarray, texture: str, rng: np.random.Generator):
    """Fills `mask` of `image` (in place) with `texture` in a random pair of colours."""
    pattern = _texture(texture, image.shape[0], rng)[..., None]
    first, second = _color_pair(rng)
    image[mask] = (first + (second - first) * pattern)[mask]


def to_image(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def generate_sample(size: int, rng: np.random.Generator) -> tuple:
    """One (RGB image, class-id mask) pair of the built-in dataset."""
    image = background(size, rng)
    label = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(2, 5)):
        class_id = rng.integers(1, len(BUILTIN_ID2LABEL))
        mask = _shape_mask(size, rng)
        paint(image, mask, TEXTURES[class_id - 1], rng)
        label[mask] = class_id
    return to_image(image), Image.fromarray(label)


def image_pairs(images: list, labels: list):
    """A `datasets.Dataset` with `image` and `label` image columns (PIL images or file paths)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def generate_builtin_dataset(num_train: int = 240, num_validation: int = 48, size: int = 96, seed: int = 0):
    """The built-in dataset as a `datasets.DatasetDict` of `image` / `label` pairs."""
    import datasets

    splits = {}
    for offset, (split, count) in enumerate((("train", num_train), ("validation", num_validation))):
        rng = np.random.default_rng([seed, offset])
        images, labels = zip(*(generate_sample(size, rng) for _ in range(count)))
        splits[split] = image_pairs(list(images), list(labels))
    return datasets.DatasetDict(splits)
