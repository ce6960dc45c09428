"""Fine-tune SegFormer on a segmentation dataset with Accelerate, with the paper's recipe.

With no arguments it trains a SegFormer-B0 from scratch on the built-in generated dataset (shapes
filled with textures) for a few minutes on a CPU, then writes a model folder ready for
`from_pretrained` and the Hub, its metrics, training curves and prediction overlays. Give a Hub
dataset id or a local folder with --dataset and a checkpoint with --model for a real run:

  segformer train --dataset segments/sidewalk-semantic --model nvidia/mit-b0
  accelerate launch --num_processes 2 -m segformer.train --config my_run.yaml

Defaults are the SegFormer paper's (Xie et al. 2021): AdamW lr 6e-5, weight decay 0.01 (none on norms
and biases), decode head at 10x lr, linear warmup then poly decay, 160k steps, 512x512 crops. The
built-in dataset uses a shorter, faster preset. Precedence: paper defaults < built-in preset (only
for the built-in dataset) < --config file (YAML or JSON) < command line.
"""

from .checkpoints import TRAINER_STATE, checkpoint_dirs, load_checkpoint, save_checkpoint
from .options import BUILTIN_PRESET, TrainingOptions, add_arguments, options_from_args, parse_options
from .run import main, run

__all__ = [
    "BUILTIN_PRESET",
    "TRAINER_STATE",
    "TrainingOptions",
    "add_arguments",
    "checkpoint_dirs",
    "load_checkpoint",
    "main",
    "options_from_args",
    "parse_options",
    "run",
    "save_checkpoint",
]
