"""Segment a generated sample image with a randomly initialised SegFormer-B0 and save an overlay.

A smoke test of the whole stack that needs no download: it builds the model, preprocesses the image
with transformers' SegformerImageProcessor, runs it and writes `mask.png` and `overlay.png`.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from .configuration_segformer import SegFormerConfig
from .inference import post_process_semantic_segmentation
from .modeling_segformer import SegFormerForSemanticSegmentation, image_processor_class
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
    parser.add_argument("--variant", default="b0", help="Model variant, b0..b5 (default: b0).")
    parser.add_argument("--num-labels", type=int, default=8, help="Number of classes of the head (default: 8).")
    parser.add_argument("--image", type=Path, help="Image to segment (default: a generated sample).")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="Output folder (default: outputs/demo).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default: 0).")


def main(args: argparse.Namespace):
    torch.manual_seed(args.seed)
    model = SegFormerForSemanticSegmentation(SegFormerConfig.from_variant(args.variant, num_labels=args.num_labels))
    model.eval()
    image = Image.open(args.image).convert("RGB") if args.image else sample_image()
    processor = image_processor_class()()
    inputs = processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits
    label_map = post_process_semantic_segmentation(logits, [image.size[::-1]])[0].numpy().astype(np.uint8)
    palette = default_palette(args.num_labels)
    args.out.mkdir(parents=True, exist_ok=True)
    colorize(label_map, palette).save(args.out / "mask.png")
    overlay(image, label_map, palette).save(args.out / "overlay.png")
    print(f"Segmented a {image.size[0]}x{image.size[1]} image with a random SegFormer-{args.variant.upper()}: "
          f"{len(np.unique(label_map))} classes present; wrote {args.out / 'mask.png'} and {args.out / 'overlay.png'}")
