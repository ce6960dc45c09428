"""The options of a pretraining run: one typed object, filled in layers like `segformer train`'s.

Precedence: the ImageNet recipe (the dataclass defaults) < the built-in set's preset (only without
--dataset) < a `--config` file (YAML or JSON, keys are the option names) < the command line.

Where the defaults come from (MiT is pretrained as PVT is, and PVT's recipe is DeiT's):
DeiT = Touvron et al. 2021, "Training data-efficient image transformers" (facebookresearch/deit `main.py`);
PVT = Wang et al. 2021, "Pyramid Vision Transformer" v1 and v2 (whai362/PVT `classification/main.py` and
`configs/pvt_v2/*.py`). docs/pretraining.md has the table.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from .. import cli
from ..configuration_segformer import VARIANTS, variant_name
from ..data import BUILTIN_DATASET
from ..errors import OptionError
from ..option_layers import OptionAdder, build_options, given_options

# PVT v2's configs: stochastic depth 0.1 and no gradient clipping for B0-B2, 0.3 and clipping at 1.0 for
# B3-B5 (pvt_v2_b3/b4/b5.py). MiT-Bx has PVT v2-Bx's stage layout.
DROP_PATH_RATE = {"b0": 0.1, "b1": 0.1, "b2": 0.1, "b3": 0.3, "b4": 0.3, "b5": 0.3}
MAX_GRAD_NORM = {"b0": None, "b1": None, "b2": None, "b3": 1.0, "b4": 1.0, "b5": 1.0}


@dataclass
class PretrainOptions:
    """Everything a pretraining run reads; the defaults are the DeiT/PVT ImageNet-1K recipe."""

    # data
    dataset: str = BUILTIN_DATASET
    dataset_config: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    validation_fraction: float = 0.1
    image_column: str | None = None
    label_column: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    check_data: bool = True
    # model
    model: str = "b0"
    drop_path_rate: float | None = None  # None: DROP_PATH_RATE of the variant
    token: str | None = None
    output_dir: str = "outputs/pretrain"
    # augmentation (DeiT)
    image_size: int = 224
    crop_scale: list = field(default_factory=lambda: [0.08, 1.0])
    eval_crop_ratio: float = 0.875  # the validation image's short side is image_size / this, then centre-cropped
    flip_prob: float = 0.5
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    random_erasing: float = 0.25
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.1
    # optimisation
    learning_rate: float | None = None  # None: base_learning_rate x global batch / 512
    base_learning_rate: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    warmup_learning_rate: float = 1e-6
    min_learning_rate: float = 1e-5
    num_epochs: int | None = 300
    max_steps: int | None = None  # when set, overrides num_epochs
    batch_size: int = 128
    eval_batch_size: int = 192
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = None  # None: MAX_GRAD_NORM of the variant
    ema_decay: float | None = None
    mixed_precision: str = "no"
    num_workers: int = 8
    num_threads: int | None = None
    seed: int = 0
    # evaluation, logging and checkpoints
    logging_steps: int = 50
    eval_steps: str = "epoch"
    checkpointing_steps: str = "epoch"
    checkpoints_total_limit: int | None = 2
    resume: str | None = None
    report_to: str = "tensorboard"
    push_to_hub: str | None = None
    private: bool = False
    license: str | None = None

    def __post_init__(self):
        self.crop_scale = list(self.crop_scale)
        variant = variant_name(self.model)
        if self.drop_path_rate is None:
            self.drop_path_rate = DROP_PATH_RATE.get(variant, 0.1)
        if self.max_grad_norm is None:
            self.max_grad_norm = MAX_GRAD_NORM.get(variant)
        self.validate()

    def validate(self):
        """Raises an OptionError naming the option (as on the command line) of the first bad value."""

        def bad(name, message):
            return OptionError(f"--{name.replace('_', '-')} {message}, got {getattr(self, name)!r}.")

        for name in ("image_size", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("num_epochs", "max_steps", "warmup_steps", "max_train_samples", "max_eval_samples",
                     "checkpoints_total_limit", "num_threads"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1)):
                raise bad(name, "must be a positive integer")
        if self.num_epochs is None and self.max_steps is None:
            raise OptionError("Give --num-epochs or --max-steps.")
        for name in ("randaugment_ops", "randaugment_magnitude", "num_workers", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise bad(name, "must be a non-negative integer")
        if self.randaugment_magnitude > 10:
            raise bad("randaugment_magnitude", "must be at most 10 (RandAugment's scale)")
        for name in ("base_learning_rate", "warmup_epochs", "warmup_learning_rate", "min_learning_rate",
                     "weight_decay", "mixup", "cutmix"):  # fmt: skip
            if not getattr(self, name) >= 0:
                raise bad(name, "must not be negative")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise bad("learning_rate", "must be positive")
        for name in ("flip_prob", "random_erasing", "mixup_switch_prob", "label_smoothing", "drop_path_rate"):
            if not 0 <= getattr(self, name) <= (1 if name != "drop_path_rate" else 0.999):
                raise bad(name, "must be between 0 and 1")
        if not 0 < self.validation_fraction < 1:
            raise bad("validation_fraction", "must be between 0 and 1")
        if not 0 < self.eval_crop_ratio <= 1:
            raise bad("eval_crop_ratio", "must be in (0, 1]")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise bad("crop_scale", "must be two numbers 0 < LOW <= HIGH <= 1")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise bad("ema_decay", "must be between 0 and 1")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise bad("max_grad_norm", "must be positive")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise bad("mixed_precision", "must be one of no, fp16, bf16")
        for name in ("eval_steps", "checkpointing_steps"):
            value = str(getattr(self, name))
            if value != "epoch" and not (value.isdigit() and int(value) > 0):
                raise bad(name, "must be a positive number of steps or 'epoch'")

    def learning_rate_for(self, global_batch: int) -> float:
        """--learning-rate, else DeiT's linear scaling rule: base x global batch / 512."""
        return self.learning_rate if self.learning_rate is not None else self.base_learning_rate * global_batch / 512


FIELDS = {f.name for f in dataclasses.fields(PretrainOptions)}

# The built-in set's preset: a B0 on 64-pixel images for a few CPU minutes. A short run learns nothing
# under the regularisers of a 300-epoch one (Mixup, CutMix, RandAugment, erasing, stochastic depth), so
# they are off here and the crops are milder; the optimiser and schedule stay the recipe's.
BUILTIN_PRESET = dict(
    model="b0",
    image_size=64,
    crop_scale=[0.35, 1.0],
    eval_crop_ratio=1.0,
    randaugment_ops=0,
    random_erasing=0.0,
    mixup=0.0,
    cutmix=0.0,
    drop_path_rate=0.0,
    learning_rate=1e-3,
    warmup_steps=50,
    max_steps=1000,
    batch_size=32,
    eval_batch_size=64,
    num_workers=0,
    logging_steps=10,
    eval_steps="100",
    checkpointing_steps="200",
)


def add_arguments(parser: argparse.ArgumentParser):
    """Every option defaults to None here, so that `options_from_args` can tell what was given; the help
    shows the layered default."""
    option = OptionAdder(parser, PretrainOptions(), BUILTIN_PRESET, "built-in set")

    option.group("data")
    option("--dataset", "An image folder (train/CLASS/*.jpg, val/CLASS/*.jpg), a `datasets` dataset with image "
           "and class-label columns (Hub id such as imagenet-1k, save_to_disk folder, Parquet files) or 'builtin' "
           "(generated textures and shapes, 9 classes)")  # fmt: skip
    option("--dataset-config", "Configuration name of the Hub dataset")
    option("--train-split", "Training split (train also finds training)")
    option("--eval-split", "Validation split (also val, valid, dev, test); none: --validation-fraction held out")
    option("--validation-fraction", "Share of the training split held out when there is no eval split", type=float)
    option("--image-column", "Column holding the images; none: found by type and name")
    option("--label-column", "Column holding the class ids; none: the ClassLabel column (label, labels, ...)")
    option("--max-train-samples", "Use only the first N training samples", type=int)
    option("--max-eval-samples", "Use only the first N validation samples", type=int)
    option("--check-data", "Before training, open every image file of an image folder and check the classes of "
           "both splits", action=argparse.BooleanOptionalAction)  # fmt: skip
    option.group("model")
    option("--model", f"A variant ({', '.join(VARIANTS)}, also mit-b0 ...), a SegFormerConfig JSON file, or a "
           "SegFormerForImageClassification folder to go on from")  # fmt: skip
    option("--drop-path-rate", "Stochastic depth of the last block; none: PVT v2's per variant (0.1 for B0-B2, "
           "0.3 for B3-B5)", type=float)  # fmt: skip
    option("--token", "Hub token (private datasets, --push-to-hub)")
    option("--output-dir", "Folder of the results: model/, checkpoints/, logs/, all_results.json, training_curves.png")
    option.group("augmentation (DeiT's)")
    option("--image-size", "Side of the square training crops and of the validation centre crop", type=int)
    option("--crop-scale", "RandomResizedCrop's range of the crop's share of the image area", nargs=2, type=float,
           metavar=("LOW", "HIGH"))  # fmt: skip
    option("--eval-crop-ratio", "Validation: short side to image-size / ratio, then centre crop", type=float)
    option("--flip-prob", "Horizontal flip probability", type=float)
    option("--randaugment-ops", "RandAugment: operations per image (0: off)", type=int)
    option("--randaugment-magnitude", "RandAugment: magnitude, 0-10", type=int)
    option("--random-erasing", "Random-erasing probability", type=float)
    option("--mixup", "Mixup's Beta(alpha, alpha) (0: off)", type=float)
    option("--cutmix", "CutMix's Beta(alpha, alpha) (0: off)", type=float)
    option("--mixup-switch-prob", "With both on, the chance a batch gets CutMix instead of Mixup", type=float)
    option("--label-smoothing", "Label smoothing of the (mixed) targets", type=float)
    option.group("optimisation")
    option("--learning-rate", "AdamW peak learning rate; none: --base-learning-rate x global batch / 512", type=float)
    option("--base-learning-rate", "Learning rate per 512 images of global batch (DeiT's scaling rule)", type=float)
    option("--weight-decay", "AdamW weight decay (never on norms and biases)", type=float)
    option("--warmup-epochs", "Linear warmup from --warmup-learning-rate", type=float)
    option("--warmup-steps", "Warmup in steps instead of epochs", type=int)
    option("--warmup-learning-rate", "Learning rate at step 0", type=float)
    option("--min-learning-rate", "Learning rate at the end of the cosine", type=float)
    option("--num-epochs", "Epochs (unless --max-steps)", type=int)
    option("--max-steps", "Optimizer steps instead of --num-epochs", type=int)
    option("--batch-size", "Training batch size per process", type=int)
    option("--eval-batch-size", "Validation batch size per process", type=int)
    option("--gradient-accumulation-steps", "Batches per optimizer step", type=int)
    option("--max-grad-norm", "Clip gradients to this norm; none: PVT v2's per variant (none for B0-B2, 1.0 for "
           "B3-B5)", type=float)  # fmt: skip
    option("--ema-decay", "Also keep an exponential moving average of the weights (e.g. 0.99996, DeiT's), "
           "evaluated and saved to OUTPUT_DIR/model_ema", type=float)  # fmt: skip
    option("--mixed-precision", "Mixed precision", choices=["no", "fp16", "bf16"])
    option("--num-workers", "Data-loading worker processes", type=int)
    option("--num-threads", "CPU threads of each process; none: torch's choice", type=int)
    option("--seed", "Random seed (weights, data order, augmentation)", type=int)
    option.group("evaluation, logging and checkpoints")
    option("--logging-steps", "Log the training loss every N steps", type=int)
    option("--eval-steps", "Evaluate every N steps or 'epoch' (and always at the end)")
    option("--checkpointing-steps", "Save the training state every N steps or 'epoch'")
    option("--checkpoints-total-limit", "Keep only the last K checkpoints", type=int)
    option("--resume", "Resume from a checkpoint folder or 'latest' (the newest in OUTPUT_DIR/checkpoints)")
    option("--report-to", "Trackers for Accelerate ('tensorboard', 'wandb', 'all' or 'none')")
    option("--push-to-hub", "Upload the final model folder to this Hub repository", metavar="REPO")
    option("--private", "Create the Hub repository as private", action=argparse.BooleanOptionalAction)
    option("--license", "License of the weights for the model card")


def options_from_args(args: argparse.Namespace) -> PretrainOptions:
    """Layers the defaults: recipe < built-in preset < config file < command line. --max-steps overrides
    --num-epochs, except where a higher layer gives --num-epochs alone."""
    given, from_file = given_options(args, FIELDS)
    dataset = given.get("dataset", from_file.get("dataset", BUILTIN_DATASET))
    preset = BUILTIN_PRESET if dataset == BUILTIN_DATASET else {}
    values = {**preset, **from_file, **given}
    for layer in (given, from_file):
        if "max_steps" in layer or "num_epochs" in layer:
            if "max_steps" not in layer:
                values["max_steps"] = None
            break
    return build_options(PretrainOptions, values, args)


def parse_options(argv=None) -> PretrainOptions:
    """The options of `segformer pretrain` from a command line (list of strings)."""
    parser = argparse.ArgumentParser(prog="segformer pretrain", formatter_class=cli.HelpFormatter)
    add_arguments(parser)
    return options_from_args(parser.parse_args(argv))
