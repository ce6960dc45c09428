"""Segment images with a trained model: a label-map PNG and an overlay PNG with a legend per image.

MODEL is anything `SegFormerForSemanticSegmentation.from_pretrained` accepts: a folder written by
`save_pretrained` (or `segformer train`/`convert`), or a Hub repo id. IMAGES are files, folders (their
images, sorted) or quoted glob patterns. For every image NAME it writes, into --out:

  NAME_labels.png    the class id of every pixel (palette PNG in the class colours; 16-bit past 256 classes)
  NAME_overlay.png   the colours over the image, with a legend of the classes present and their share

Default protocol: short side resized to 512, sides rounded up to a multiple of 32 (the paper's ADE20K
test). --window 1024 --stride 768 slides windows instead (its Cityscapes test); --scales and --flip add
test-time augmentation; --protocol picks the paper's settings by dataset name.
"""

import argparse
import glob
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .inference import MULTI_SCALE, PROTOCOLS, InferenceSettings, segment
from .modeling_segformer import SegFormerForSemanticSegmentation, image_processor_class
from .visualization import default_palette, label_image, overlay_with_legend

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("model", help="Model folder or Hub repo id.")
    parser.add_argument("images", nargs="+", help="Image files, folders or quoted glob patterns.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder (created if needed).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda when available, else cpu).")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="Weights and activations (default: fp32).")
    parser.add_argument("--batch-size", type=int, default=1, help="Images of the same size run together (default: 1).")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), help="The paper's test settings for this dataset.")
    parser.add_argument("--short-side", type=int, default=None, help="Resize the short side to this (default: 512).")
    parser.add_argument("--no-resize", action="store_true", help="Keep the image size (rounded up to a multiple of 32).")
    parser.add_argument("--window", type=int, help="Sliding-window size in pixels (default: whole image).")
    parser.add_argument("--stride", type=int, help="Sliding-window stride (default: the window).")
    parser.add_argument("--scales", type=float, nargs="+", help="Test-time scales of the short side, e.g. 0.75 1 1.25.")
    parser.add_argument("--flip", action="store_true", help="Also average the mirrored image (test-time augmentation).")
    parser.add_argument("--multi-scale", action="store_true", help="The paper's TTA: scales 0.5..1.75 and flip.")
    parser.add_argument("--alpha", type=float, default=0.5, help="Opacity of the colours in the overlay (default: 0.5).")


def settings_from_args(args: argparse.Namespace) -> InferenceSettings:
    """The protocol's settings (or the defaults), overridden by the options given."""
    settings = asdict(PROTOCOLS[args.protocol]) if args.protocol else {}
    overrides = dict(short_side=args.short_side, window=args.window, stride=args.stride, flip=args.flip or None)
    settings.update({name: value for name, value in overrides.items() if value is not None})
    if args.multi_scale:
        settings.update(MULTI_SCALE)
    if args.scales:
        settings["scales"] = tuple(args.scales)
    if args.no_resize:
        settings["short_side"] = None
    return InferenceSettings(**settings)


def find_images(patterns: list) -> list:
    """Files, folders (their images, sorted) and glob patterns -> image paths, each once, in order."""
    paths = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SystemExit(f"error: folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SystemExit(f"error: {pattern!r} is no file, folder or glob pattern that matches images.")
        paths += [p for p in found if p not in paths]
    return paths


def output_names(paths: list) -> list:
    """A distinct output name per image: its stem, with the parent folders prepended where stems repeat."""
    names = [path.stem for path in paths]
    for depth in range(1, max(len(path.parts) for path in paths)):
        if len(set(names)) == len(names):
            break
        names = ["_".join(path.with_suffix("").parts[-depth - 1 :]) for path in paths]
    return names


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise SystemExit(f"error: cannot read {path} as an image ({error}).") from error


def load_model(name: str, device: str, dtype: torch.dtype):
    model = SegFormerForSemanticSegmentation.from_pretrained(name)
    try:
        processor = image_processor_class().from_pretrained(name)
    except OSError:  # a checkpoint without preprocessor_config.json: SegFormer's ImageNet normalisation
        processor = image_processor_class()()
    return model.to(device, dtype).eval(), processor


def config_palette(config) -> np.ndarray:
    """The config's `palette` ([[r, g, b], ...] per class) when it has one, else `default_palette`."""
    palette = getattr(config, "palette", None)
    return np.asarray(palette, np.uint8) if palette is not None else default_palette(config.num_labels)


def main(args: argparse.Namespace):
    settings = settings_from_args(args)
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be at least 1, got {args.batch_size}.")
    paths = find_images(args.images)
    model, processor = load_model(args.model, args.device, DTYPES[args.dtype])
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    palette = config_palette(model.config)
    args.out.mkdir(parents=True, exist_ok=True)
    names = output_names(paths)
    # Batches of `batch_size` images are read, segmented and written together, so memory holds one batch.
    for start in tqdm(range(0, len(paths), args.batch_size), desc="segmenting", unit="batch"):
        images = [load_image(path) for path in paths[start : start + args.batch_size]]
        pixel_values = [processor(images=image, do_resize=False, return_tensors="pt")["pixel_values"][0] for image in images]
        label_maps = segment(model, pixel_values, settings, batch_size=args.batch_size)
        for name, image, label_map in zip(names[start:], images, label_maps):
            label_map = label_map.cpu().numpy()
            label_image(label_map, palette).save(args.out / f"{name}_labels.png")
            overlay_with_legend(image, label_map, palette, id2label, args.alpha).save(args.out / f"{name}_overlay.png")
    print(f"Segmented {len(paths)} image(s) with {args.model}; wrote label maps and overlays to {args.out}")
