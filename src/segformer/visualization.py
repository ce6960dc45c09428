"""Pictures of segmentations: colour palettes, colourised label maps and overlays on the image."""

import numpy as np
from PIL import Image


def default_palette(num_labels: int) -> np.ndarray:
    """A (num_labels, 3) uint8 palette of well-separated colours, the same for every call."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(max(num_labels, 1), 3), dtype=np.uint8)
    # Golden-ratio hues keep neighbouring class ids apart; the random values vary brightness.
    hues = (np.arange(len(palette)) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 255, np.full_like(hues, 200), 140 + palette[:, 0] % 116], axis=1).astype(np.uint8)
    return np.asarray(Image.fromarray(hsv[None], mode="HSV").convert("RGB"))[0]


def colorize(label_map: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Label map (H, W) of class ids -> RGB image; ids outside the palette (e.g. 255) are black."""
    label_map = np.asarray(label_map)
    colors = np.zeros((256 if label_map.max(initial=0) < 256 else int(label_map.max()) + 1, 3), np.uint8)
    colors[: len(palette)] = palette
    return Image.fromarray(colors[label_map])


def overlay(image: Image.Image, label_map: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend the colourised label map over the image (resized to the label map if needed)."""
    mask = colorize(label_map, palette)
    return Image.blend(image.convert("RGB").resize(mask.size), mask, alpha)
