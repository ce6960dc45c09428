"""Segment images with a trained model: a label-map PNG and an overlay PNG with a legend per image.

MODEL is anything `SegFormerForSemanticSegmentation.from_pretrained` accepts: a folder written by
`save_pretrained` (or `segformer train`/`convert`), or a Hub repo id. IMAGES are files, folders (their
images, sorted) or quoted glob patterns. For every image NAME it writes, into --output-dir:

  NAME_labels.png    the class id of every pixel (palette PNG in the class colours; 16-bit past 256 classes)
  NAME_overlay.png   the colours over the image, with a legend of the classes present and their share

Default protocol: the one the model's saved image processor describes, which is what training evaluated
and what `pipeline("image-segmentation")` runs (short side resized, sides rounded up to a multiple of 32).
--protocol picks the paper's settings by dataset name (ade20k: short side 512; cityscapes: 1024 windows
every 768 pixels); --short-side, --window/--stride, --scales and --flip override single settings.

Speed: --dtype bf16/fp16 casts the weights where the device computes in that precision natively (a CPU
without AVX512-BF16/AMX keeps fp32 and says so); --quantize int8 runs int8 Linear layers on the CPU;
--compile uses torch.compile (its warm-up is printed apart). benchmarks/benchmark.py measures each mode's
speed and its agreement with fp32.
"""

import argparse
import time
from dataclasses import asdict

from tqdm.auto import tqdm

from . import cli
from .errors import OptionError
from .files import find_images, make_output_dir, open_image, output_names
from .inference import MULTI_SCALE, PROTOCOLS, InferenceSettings, segment_images
from .loading import load_image_processor, load_model, resolve_device
from .precision import QUANTIZATIONS, SpeedSettings, prepare_for_inference
from .visualization import config_palette, label_image, overlay_with_legend


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("model", help="Model folder or Hub repo id.")
    parser.add_argument("images", nargs="+", help="Image files, folders or quoted glob patterns.")
    cli.add_output_dir(parser, "outputs/predict", "for the label maps and overlays")
    cli.add_model_download(parser)
    cli.add_device(parser)
    cli.add_dtype(parser)
    speed = parser.add_argument_group("speed (see `segformer.precision`)")
    speed.add_argument("--quantize", choices=QUANTIZATIONS, help="int8 Linear layers (dynamic quantization, CPU) (default: none).")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model; the first batch compiles it.")
    parser.add_argument("--batch-size", type=int, default=1, help="Images of the same size run together.")
    cli.add_protocol(parser)
    parser.add_argument("--alpha", type=float, default=0.5, help="Opacity of the colours in the overlay.")


def settings_from_args(args: argparse.Namespace, processor) -> InferenceSettings:
    """The processor's protocol, or the paper's for --protocol, overridden by the options given."""
    settings = asdict(PROTOCOLS[args.protocol] if args.protocol else InferenceSettings.from_processor(processor))
    overrides = dict(short_side=args.short_side, window=args.window, stride=args.stride, flip=args.flip or None)
    settings.update({name: value for name, value in overrides.items() if value is not None})
    if args.multi_scale:
        settings.update(MULTI_SCALE)
    if args.scales:
        settings["scales"] = tuple(args.scales)
    if args.no_resize:
        settings.update(short_side=None, align=32)
    return InferenceSettings(**settings)


def main(args: argparse.Namespace):
    speed = SpeedSettings(args.dtype, args.quantize, args.compile)
    if args.batch_size < 1:
        raise OptionError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if not 0.0 <= args.alpha <= 1.0:
        raise OptionError(f"--alpha must be between 0 and 1, got {args.alpha}.")
    paths = find_images(args.images)
    hub = dict(revision=args.revision, token=args.token)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device, dtype="fp32", **hub)
    model, notes = prepare_for_inference(model, speed, device)
    for note in notes:
        print(note)
    processor = load_image_processor(args.model, **hub)
    settings = settings_from_args(args, processor)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    palette = config_palette(model.config)
    folder = make_output_dir(args.output_dir)
    names = output_names(paths)
    # Batches of `batch_size` images are read, segmented and written together, so memory holds one batch.
    for start in tqdm(range(0, len(paths), args.batch_size), desc="segmenting", unit="batch"):
        chunk = paths[start : start + args.batch_size]
        images = [open_image(path, num_channels=processor.num_channels) for path in chunk]
        began = time.perf_counter()
        label_maps = segment_images(model, processor, images, settings, batch_size=args.batch_size)
        if args.compile and start == 0:  # apart: compiling takes far longer than running
            print(f"torch.compile warm-up (compilation and first batch): {time.perf_counter() - began:.1f} s")
        for name, image, label_map in zip(names[start:], images, label_maps):
            label_image(label_map, palette).save(folder / f"{name}_labels.png")
            overlay_with_legend(image, label_map, palette, id2label, args.alpha).save(folder / f"{name}_overlay.png")
    print(f"Segmented {len(paths)} image(s) with {args.model}; wrote label maps and overlays to {folder}")
