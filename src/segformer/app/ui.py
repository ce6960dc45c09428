"""The page of `segformer app`: Gradio Blocks around a `Segmenter`.

Left, the input (upload, drop, paste or an example), the protocol and a Segment button; right, the overlay
with its legend, an opacity slider, the share of every class and the label-map PNG to download; above, what
the model card says. A new image or protocol segments at once; the opacity re-blends the stored label map
without running the model again. Errors the user can fix (`SegFormerError`: not an image, wrong channel
count, too small) become `gr.Error` messages in the page; the API endpoint `/segment` raises them to
`gradio_client` callers with the same message.
"""

import atexit
import html
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from ..errors import SegFormerError
from ..resize_segformer import PROTOCOLS as RESIZE_PROTOCOLS
from ..visualization import label_image
from .segmenter import PROTOCOL_NAMES, WHOLE_IMAGE, Segmenter

# The overlay's legend sits in its top-right corner, where Gradio puts the image's buttons (and its label
# top-left): the picture starts below them.
CSS = "#overlay .image-frame { padding-top: 2.4rem; }"
# How cards name the mIoU (`segformer train` writes mean_iou; the card's model-index calls it mIoU).
MIOU_NAMES = ("mean_iou", "miou", "meaniou")


def image_input(**kwargs) -> gr.Image:
    """`gr.Image` whose unreadable uploads end in a message that names the file. Gradio opens the upload
    before the event's function runs, and a file that is no image would otherwise fail there with a bare
    "Error". Its `preprocess` is wrapped on the instance rather than in a subclass: Gradio writes a `.pyi`
    stub next to the source file of every component subclass, inside the installed package."""
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def readable(payload):
        try:
            return preprocess(payload)
        except (OSError, ValueError, SyntaxError) as error:
            name = getattr(payload, "orig_name", None) or "the upload"
            reason = "not an image file" if "cannot identify image" in str(error) else str(error)
            raise gr.Error(f"Cannot read {name} as an image ({reason}).") from None

    image.preprocess = readable
    return image


def protocol_help(segmenter: Segmenter) -> str:
    """One line per protocol: what it does with this model's processor."""
    lines = []
    for name in PROTOCOL_NAMES:
        settings = segmenter.settings(name)
        size = f"short side {settings.short_side}" if settings.short_side else "the image's own size"
        if settings.resize_protocol != "segformer":  # a converted model: its source framework's resize
            text = f"{size}, resized as {RESIZE_PROTOCOLS[settings.resize_protocol].description}"
        else:
            text = f"{size}, sides rounded up to a multiple of {settings.align}"
        if settings.window:
            text += f", {settings.window}-pixel windows every {settings.stride} pixels"
        if not settings.single_pass:
            scales = ", ".join(f"{scale:g}" for scale in settings.scales)
            text += f", scales {scales}{' and mirrored' if settings.flip else ''}"
        lines.append(f"**{name}**: {text}")
    return "  \n".join(lines)


def header(segmenter: Segmenter) -> str:
    """The model's name, variant, classes, training data, license and mIoU, as Markdown."""
    card = segmenter.card
    variant = f"MiT-{segmenter.variant.upper()}" if segmenter.variant else "a custom Mix Transformer"
    facts = [f"SegFormer with {variant} encoder", f"{len(segmenter.id2label)} classes"]
    if card.datasets:
        facts.append("trained on " + ", ".join(f"`{dataset}`" for dataset in card.datasets))
    if card.license:
        facts.append(f"license `{card.license}`")
    miou = next((value for name, value in card.metrics if name.lower().removeprefix("eval_") in MIOU_NAMES), None)
    if miou is not None:
        facts.append(f"**mIoU {miou}**")
    return f"# {html.escape(card.title or segmenter.name)}\n\n`{segmenter.name}`: {' · '.join(facts)}\n"


def metric_table(segmenter: Segmenter) -> str:
    rows = "\n".join(f"| {name} | {value} |" for name, value in segmenter.card.metrics)
    return f"| metric | value |\n|---|---:|\n{rows}\n"


def label_chips(segmenter: Segmenter) -> str:
    """The classes as colour swatches with their id and name, in HTML."""
    chips = []
    for class_id, name in sorted(segmenter.id2label.items()):
        r, g, b = (int(c) for c in segmenter.palette[class_id]) if class_id < len(segmenter.palette) else (0, 0, 0)
        chips.append(
            f'<span style="display:inline-block;margin:2px 10px 2px 0;white-space:nowrap">'
            f'<span style="display:inline-block;width:0.9em;height:0.9em;background:rgb({r},{g},{b});'
            f'border:1px solid #444;vertical-align:middle"></span> {class_id} {html.escape(str(name))}</span>'
        )
    return "".join(chips)


def build_demo(segmenter: Segmenter, examples_dir=None) -> gr.Blocks:
    """The app's Blocks. Example images and label-map PNGs are written into `examples_dir` (default: a
    temporary folder removed at exit)."""
    if examples_dir is None:
        examples_dir = tempfile.mkdtemp(prefix="segformer-app-")
        atexit.register(shutil.rmtree, examples_dir, ignore_errors=True)
    work = Path(examples_dir)
    example_paths = []
    for index, example in enumerate(segmenter.example_images()):
        example_paths.append(work / f"example_{index}.png")
        example.save(example_paths[-1])

    def segment(path, protocol, alpha, progress=gr.Progress()):
        """Segment the image at `path`: (overlay, class shares, label-map PNG, state for the opacity)."""
        try:
            name = Path(path).name if path else None
            image = segmenter.open(path, name)
            progress(0, desc="Segmenting")
            label_map = segmenter.segment(image, protocol, lambda done, total: progress((done, total), desc=protocol, unit="passes"))
        except SegFormerError as error:
            raise gr.Error(str(error)) from None
        output = Path(tempfile.mkdtemp(dir=work)) / f"{Path(name).stem}_labels.png"
        label_image(label_map, segmenter.palette).save(output)
        state = (image, label_map)
        return segmenter.overlay(image, label_map, alpha), segmenter.shares(label_map), str(output), state

    def segment_if_any(path, protocol, alpha, progress=gr.Progress()):
        if path is None:  # the image was cleared: so are the results
            return None, None, None, None
        return segment(path, protocol, alpha, progress)

    def reblend(state, alpha):
        return None if state is None else segmenter.overlay(*state, alpha)

    with gr.Blocks(title=f"SegFormer: {segmenter.card.title or segmenter.name}") as demo:
        gr.Markdown(header(segmenter))
        with gr.Row():
            with gr.Column():
                image = image_input(label="Image (upload, drop or paste)", type="filepath", image_mode=None,
                                   sources=["upload", "clipboard"], elem_id="input-image")  # fmt: skip
                protocol = gr.Radio(list(PROTOCOL_NAMES), value=WHOLE_IMAGE, label="Protocol")
                gr.Markdown(protocol_help(segmenter))
                button = gr.Button("Segment", variant="primary")
                gr.Examples([[str(path)] for path in example_paths], inputs=[image], label="Examples")
            with gr.Column():
                overlay = gr.Image(label="Overlay", type="pil", format="png", interactive=False, elem_id="overlay",
                                   buttons=["download", "fullscreen"])  # fmt: skip
                alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity of the classes")
                shares = gr.Label(label="Share of the pixels", num_top_classes=len(segmenter.id2label), elem_id="shares")
                download = gr.File(label="Label map (PNG, one class id per pixel)", interactive=False, elem_id="labels")
        with gr.Accordion(f"Classes ({len(segmenter.id2label)})", open=len(segmenter.id2label) <= 20):
            gr.HTML(label_chips(segmenter))
        if segmenter.card.metrics:
            with gr.Accordion("Metrics (from the model card)", open=False):
                gr.Markdown(metric_table(segmenter))
        state = gr.State()
        outputs = [overlay, shares, download, state]
        button.click(segment, [image, protocol, alpha], outputs, api_name="segment")
        for trigger in (image.change, protocol.change):
            trigger(segment_if_any, [image, protocol, alpha], outputs, api_visibility="private")
        alpha.release(reblend, [state, alpha], [overlay], api_visibility="private", show_progress="hidden")
    return demo


__all__ = ["build_demo", "image_input"]
