"""Pretrain a Mix Transformer encoder on image classification, with the DeiT/PVT ImageNet recipe.

With no arguments it trains a MiT-B0 classifier from scratch on a generated set (the textures and shapes
of the built-in segmentation data, 9 classes) for a few minutes on a CPU and writes OUTPUT_DIR/model, a
`SegFormerForImageClassification` folder that `segformer train --model` fine-tunes for segmentation. Give
an image folder (train/CLASS/*.jpg, val/CLASS/*.jpg) or a `datasets` dataset (imagenet-1k) for a real run:

  segformer pretrain --dataset /data/imagenet --model b0 --output-dir outputs/mit-b0
  accelerate launch --multi_gpu --num_processes 8 -m segformer.pretrain --config examples/imagenet_mit_b0.yaml

Defaults are the ImageNet-1K recipe that MiT takes from PVT, and PVT from DeiT (Touvron et al. 2021; Wang
et al. 2021): AdamW, learning rate 5e-4 x batch / 512, weight decay 0.05, 5 warmup epochs then cosine,
300 epochs, 224 crops, label smoothing 0.1, RandAugment m9 n2, Mixup 0.8 / CutMix 1.0, random erasing 0.25,
stochastic depth per variant. The built-in set uses a shorter preset (docs/pretraining.md).
"""

from .options import BUILTIN_PRESET, PretrainOptions, add_arguments, options_from_args, parse_options
from .run import main, run

__all__ = ["BUILTIN_PRESET", "PretrainOptions", "add_arguments", "main", "options_from_args", "parse_options", "run"]
