"""Write the small transformers-4.x-layout SegFormer checkpoints that `tests/test_conversion.py` converts.

The official Hub checkpoints (`nvidia/mit-b*`, `nvidia/segformer-b*-finetuned-*`) were saved by
transformers 4.x, whose key layout (`segformer.encoder.block.N.M.attention.self.query`, ...) differs from
the 5.x one. This script builds two tiny models of that layout with transformers 4.x itself, a
semantic-segmentation model shaped like an ADE20K fine-tune (150 labels, its processor config) and an
ImageNet-style encoder classifier, and saves them with their logits on a fixed input.

Run it once, in a separate environment with transformers 4.x (the package's own environment has 5.x):

    python3 -m venv /tmp/venv-tf4-convert
    /tmp/venv-tf4-convert/bin/pip install transformers==4.46.3 torch safetensors
    /tmp/venv-tf4-convert/bin/python scripts/make_tf4_fixture.py tests/fixtures
"""

import argparse
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    SegformerConfig,
    SegformerForImageClassification,
    SegformerForSemanticSegmentation,
    SegformerImageProcessor,
)

# A MiT small enough to commit: the released heads (1, 2, 5, 8) and reduction ratios, tiny widths.
TINY = dict(
    hidden_sizes=[4, 8, 20, 32],
    depths=[1, 2, 1, 1],
    num_attention_heads=[1, 2, 5, 8],
    sr_ratios=[8, 4, 2, 1],
    mlp_ratios=[4, 4, 2, 2],  # not the released 4s, so that the converter must read them off the tensors
    decoder_hidden_size=16,
)
# Not square, so that a height/width mix-up cannot go unnoticed; 32 is the smallest size sr=8 allows.
INPUT_SHAPE = (1, 3, 32, 48)


def randomize(model: torch.nn.Module, seed: int):
    """Random values in every parameter and buffer: the default init (LayerNorm 1/0, BatchNorm
    statistics 0/1) would let a converter that swaps two norms pass unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif "norm" in name and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * noise)
            else:
                tensor.copy_(0.2 * noise)


def build(model_class, config: SegformerConfig, seed: int):
    model = model_class(config).eval()
    randomize(model, seed)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="Folder to write the fixtures into (tests/fixtures).")
    args = parser.parse_args()
    if not transformers.__version__.startswith("4."):
        raise SystemExit(f"Run this with transformers 4.x (found {transformers.__version__}): see the docstring.")

    ade = SegformerConfig(**TINY, num_labels=150, id2label={i: f"ade_class_{i}" for i in range(150)})
    ade.label2id = {label: i for i, label in ade.id2label.items()}
    imagenet = SegformerConfig(**TINY, num_labels=10, id2label={i: f"imagenet_class_{i}" for i in range(10)})
    imagenet.label2id = {label: i for i, label in imagenet.id2label.items()}
    models = {
        "tf4-segformer-ade": build(SegformerForSemanticSegmentation, ade, seed=1),
        "tf4-mit": build(SegformerForImageClassification, imagenet, seed=2),
    }
    pixel_values = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    reference = {"pixel_values": pixel_values}
    for name, model in models.items():
        model.save_pretrained(args.out / name, safe_serialization=True)
        with torch.no_grad():
            reference[f"{name}.logits"] = model(pixel_values).logits.contiguous()
    # As the official ADE20K checkpoints: labels shifted by one (0 = "other" ignored), 512x512.
    SegformerImageProcessor(do_reduce_labels=True, size={"height": 512, "width": 512}).save_pretrained(
        args.out / "tf4-segformer-ade"
    )
    save_file(reference, args.out / "tf4_reference.safetensors", metadata={"transformers": transformers.__version__})
    print(f"Wrote {', '.join(models)} and tf4_reference.safetensors to {args.out} (transformers {transformers.__version__}).")


if __name__ == "__main__":
    main()
