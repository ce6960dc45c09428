"""Pictures of segmentations: colour palettes, colourised label maps and overlays on the image."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def default_palette(num_labels: int) -> np.ndarray:
    """A (num_labels, 3) uint8 palette of well-separated colours, the same for every call."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(max(num_labels, 1), 3), dtype=np.uint8)
    # Golden-ratio hues keep neighbouring class ids apart; the random values vary brightness.
    hues = (np.arange(len(palette)) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 255, np.full_like(hues, 200), 140 + palette[:, 0] % 116], axis=1).astype(np.uint8)
    return np.asarray(Image.fromarray(hsv[None], mode="HSV").convert("RGB"))[0]


def config_palette(config) -> np.ndarray:
    """The config's `palette` ([[r, g, b], ...] per class) when it has one, else `default_palette`."""
    palette = getattr(config, "palette", None)
    return np.asarray(palette, np.uint8) if palette is not None else default_palette(config.num_labels)


def colorize(label_map: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Label map (H, W) of class ids -> RGB image; ids outside the palette (e.g. 255) are black."""
    label_map = np.asarray(label_map)
    return Image.fromarray(color_table(palette, int(label_map.max(initial=0)))[label_map])


def color_table(palette: np.ndarray, max_id: int = 255) -> np.ndarray:
    """The palette extended with black to cover every id up to `max_id` (and at least 256 ids)."""
    colors = np.zeros((max(256, max_id + 1, len(palette)), 3), np.uint8)
    colors[: len(palette)] = palette
    return colors


def preview(image) -> Image.Image:
    """An RGB picture of any image: a PIL image converted; an (H, W[, C]) array of bands (.npy files,
    multi-page TIFFs) as its first three bands (or its first band in grey), stretched to 0..255."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image, dtype=np.float32)
    array = array[..., :3] if array.ndim == 3 and array.shape[-1] >= 3 else np.atleast_3d(array)[..., :1].repeat(3, -1)
    low, high = float(array.min()), float(array.max())
    return Image.fromarray(((array - low) * (255 / max(high - low, 1e-12))).clip(0, 255).astype(np.uint8))


def overlay(image, label_map: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend the colourised label map over the image (`preview`, resized to the label map if needed)."""
    mask = colorize(label_map, palette)
    return Image.blend(preview(image).resize(mask.size), mask, alpha)


def label_image(label_map: np.ndarray, palette: np.ndarray) -> Image.Image:
    """A PNG-ready label map that keeps the class ids as pixel values: a palette ("P") image shown in
    the class colours when the ids fit in 8 bits, else 16-bit greyscale."""
    label_map = np.asarray(label_map)
    if label_map.min(initial=0) < 0 or label_map.max(initial=0) >= 2**16:
        raise ValueError(f"Label ids must be in [0, 65535] to be stored as PNG, got {label_map.min()}..{label_map.max()}.")
    if label_map.max(initial=0) >= 256:
        return Image.fromarray(label_map.astype(np.uint16))
    image = Image.fromarray(label_map.astype(np.uint8), mode="P")
    image.putpalette(color_table(palette)[:256].tobytes())
    return image


def classes_present(label_map: np.ndarray) -> list:
    """(class id, share of the pixels) of every class in the map, the largest first."""
    ids, counts = np.unique(np.asarray(label_map), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(int(ids[i]), counts[i] / counts.sum()) for i in order]


def percent(share: float) -> str:
    return f"{100 * share:.1f}%" if share >= 0.001 else "<0.1%"


def legend(label_map: np.ndarray, palette: np.ndarray, id2label: dict, height: int) -> Image.Image:
    """A white panel `height` pixels tall listing the classes present (colour swatch, name, share of the
    image), the largest first; classes that do not fit are summed in a last line."""
    font_size = max(12, min(28, height // 24))
    font = ImageFont.load_default(size=font_size)
    line = round(font_size * 1.5)
    entries = classes_present(label_map)
    fits = max(1, (height - line // 2) // line)
    shown, hidden = (entries, []) if len(entries) <= fits else (entries[: fits - 1], entries[fits - 1 :])
    texts = [f"{id2label.get(class_id, class_id)}  {percent(share)}" for class_id, share in shown]
    if hidden:
        texts.append(f"+{len(hidden)} more  {percent(sum(share for _, share in hidden))}")
    text_left = 2 * font_size  # after a swatch of one font size and half a font size either side
    width = text_left + max(round(font.getlength(text)) for text in texts) + font_size
    panel = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(panel)
    colors = color_table(palette, max(class_id for class_id, _ in entries))
    for row, text in enumerate(texts):
        top = line // 2 + row * line
        if row < len(shown):
            swatch = [font_size // 2, top, font_size // 2 + font_size, top + font_size]
            draw.rectangle(swatch, fill=tuple(int(c) for c in colors[shown[row][0]]), outline="black")
        draw.text((text_left, top + font_size // 2), text, fill="black", font=font, anchor="lm")
    return panel


def overlay_with_legend(
    image: Image.Image, label_map: np.ndarray, palette: np.ndarray, id2label: dict, alpha: float = 0.5
) -> Image.Image:
    """`overlay` with the `legend` of the classes present to its right."""
    blended = overlay(image, label_map, palette, alpha)
    panel = legend(label_map, palette, id2label, blended.height)
    canvas = Image.new("RGB", (blended.width + panel.width, blended.height), "white")
    canvas.paste(blended, (0, 0))
    canvas.paste(panel, (blended.width, 0))
    return canvas
