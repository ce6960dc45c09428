"""Segment a generated sample image with a randomly initialised SegFormer-B0 and save an overlay.

A smoke test of the whole stack that needs no download: it builds the model and segments the image
through the same path as `segformer predict` and `pipeline()` (the package's image processor, the
paper's whole-image protocol), then writes `mask.png` and `overlay.png` to --output-dir.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import cli
from .configuration_segformer import SegFormerConfig
from .errors import OptionError
from .files import make_output_dir, open_image
from .image_processing_segformer import SegFormerImageProcessor
from .inference import segment_images
from .modeling_segformer import SegFormerForSemanticSegmentation
from .visualization import colorize, default_palette, overlay


def sample_image(size: int = 512) -> Image.Image:
    """A synthetic scene: sky, ground, a sun and a house, drawn deterministically."""
    image = Image.new("RGB", (size, size), (110, 170, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size * 0.6, size, size], fill=(90, 150, 60))
    draw.ellipse([size * 0.7, size * 0.08, size * 0.88, size * 0.26], fill=(250, 220, 80))
    draw.rectangle([size * 0.2, size * 0.4, size * 0.5, size * 0.7], fill=(180, 80, 60))
    draw.polygon([(size * 0.17, size * 0.4), (size * 0.35, size * 0.25), (size * 0.53, size * 0.4)], fill=(120, 40, 40))
    return image


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--variant", default="b0", help="Model variant, b0..b5.")
    parser.add_argument("--num-labels", type=int, default=8, help="Number of classes of the head.")
    parser.add_argument("--image", type=Path, help="Image to segment (default: a generated sample).")
    cli.add_output_dir(parser, "outputs/demo", "for mask.png and overlay.png")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")


def main(args: argparse.Namespace):
    if args.num_labels < 1:
        raise OptionError(f"--num-labels must be at least 1, got {args.num_labels}.")
    try:
        config = SegFormerConfig.from_variant(args.variant, num_labels=args.num_labels)
    except ValueError as error:
        raise OptionError(f"--variant: {error}") from None
    image = open_image(args.image) if args.image else sample_image()
    folder = make_output_dir(args.output_dir)
    torch.manual_seed(args.seed)
    model = SegFormerForSemanticSegmentation(config).eval()
    label_map = segment_images(model, SegFormerImageProcessor(), [image])[0].astype(np.uint8)
    palette = default_palette(args.num_labels)
    colorize(label_map, palette).save(folder / "mask.png")
    overlay(image, label_map, palette).save(folder / "overlay.png")
    print(f"Segmented a {image.size[0]}x{image.size[1]} image with a random SegFormer-{args.variant.upper()}: "
          f"{len(np.unique(label_map))} classes present; wrote {folder / 'mask.png'} and {folder / 'overlay.png'}")
