"""A Hugging Face Space for a SegFormer model: upload an image, see its segmentation.

Written by `segformer space`: the lines MODEL_ID ... PALETTE below are this Space's; the rest is the same in
every one. It needs only public packages (transformers, torch, gradio, pillow, numpy). The model and its
image processor come from the model repository, with their code (`trust_remote_code=True`); the label map is
the processor's `post_process_semantic_segmentation` of the logits, as in the model card's usage, which is
what `segformer predict` computes, pixel for pixel."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation  # noqa: E402

MODEL_ID = "your-name/your-segformer"
MODEL_REVISION = None
TITLE = "SegFormer"
# The class colours of `segformer predict` (the config's `palette`, else the package's default), written
# by `segformer space` as data, so the Space needs no code of the package.
PALETTE = [[255, 0, 0], [0, 0, 255]]

HERE = Path(__file__).resolve().parent
model = AutoModelForSemanticSegmentation.from_pretrained(MODEL_ID, revision=MODEL_REVISION, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(MODEL_ID, revision=MODEL_REVISION, trust_remote_code=True)
id2label = {int(k): v for k, v in model.config.id2label.items()}
# The `segformer` package's processor reads every PIL mode itself; others (transformers' own) want RGB.
reads_any_mode = hasattr(processor, "num_channels") and hasattr(processor, "pixel_values")
# The smallest side the model runs on (its stages reduce keys and values), where the model says.
min_side = getattr(model.base_model, "min_input_size", 32)


colors = np.zeros((256, 3), np.uint8)
_palette = np.asarray(PALETTE, np.uint8).reshape(-1, 3)
colors[: min(256, len(_palette))] = _palette[:256]


def segment(image: Image.Image) -> np.ndarray:
    """The (H, W) class ids of `image`: the processor's protocol, the model, the processor's post-processing."""
    if not reads_any_mode:
        image = image.convert("RGB")
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]
    return label_map.cpu().numpy()


def overlay(image: Image.Image, label_map: np.ndarray, alpha: float) -> Image.Image:
    mask = Image.fromarray(colors[label_map.astype(np.int64) % 256])
    return Image.blend(image.convert("RGB"), mask, alpha)


def shares(label_map: np.ndarray) -> dict:
    ids, counts = np.unique(label_map, return_counts=True)
    return {str(id2label.get(int(i), int(i))): float(c / counts.sum()) for i, c in zip(ids, counts)}


def label_png(label_map: np.ndarray, name: str) -> str:
    """The label map as a palette PNG (class id = pixel value, shown in the class colours)."""
    png = Image.fromarray(label_map.astype(np.uint8), mode="P") if label_map.max() < 256 else Image.fromarray(label_map.astype(np.uint16))
    if png.mode == "P":
        png.putpalette(colors.tobytes())
    path = Path(tempfile.mkdtemp()) / f"{name}_labels.png"
    png.save(path)
    return str(path)


def predict(path, alpha=0.5):
    """Gradio's function: (overlay, class shares, label-map PNG, state) of the uploaded image."""
    if path is None:
        raise gr.Error("No image: upload or drop one, or pick an example.")
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise gr.Error(f"Cannot read {Path(path).name} as an image (not an image file).") from None
    if min(image.size) < min_side:
        raise gr.Error(f"The image is {image.width}x{image.height} pixels: too small for this model, which needs at least {min_side}x{min_side}.")
    try:
        label_map = segment(image)
    except ValueError as error:  # e.g. a channel count the model does not take
        raise gr.Error(f"This image cannot be segmented: {error}") from None
    return overlay(image, label_map, alpha), shares(label_map), label_png(label_map, Path(path).stem), (image, label_map)


def predict_if_any(path, alpha=0.5):
    return (None, None, None, None) if path is None else predict(path, alpha)  # cleared: so are the results


def reblend(state, alpha):
    return None if state is None else overlay(*state, alpha)


examples = sorted(str(path) for path in (HERE / "examples").glob("*.png"))
with gr.Blocks(title=TITLE) as demo:
    gr.Markdown(f"# {TITLE}\n\nSemantic segmentation with [`{MODEL_ID}`](https://huggingface.co/{MODEL_ID}) "
                f"({len(id2label)} classes). Upload or drop an image, or pick an example.")  # fmt: skip
    with gr.Row():
        with gr.Column():
            image_input = gr.Image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"])
            button = gr.Button("Segment", variant="primary")
            if examples:
                gr.Examples([[path] for path in examples], inputs=[image_input])
        with gr.Column():
            overlay_output = gr.Image(label="Overlay", type="pil", format="png", interactive=False)
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity of the classes")
            shares_output = gr.Label(label="Share of the pixels", num_top_classes=len(id2label))
            labels_output = gr.File(label="Label map (PNG, one class id per pixel)", interactive=False)
    state = gr.State()
    outputs = [overlay_output, shares_output, labels_output, state]
    button.click(predict, [image_input, alpha], outputs, api_name="segment")
    image_input.change(predict_if_any, [image_input, alpha], outputs)
    alpha.release(reblend, [state, alpha], [overlay_output])

if __name__ == "__main__":
    demo.launch()
