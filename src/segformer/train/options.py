"""The options of a training run: one typed object, filled in layers.

Precedence: the paper's recipe (the dataclass defaults) < the dataset's preset (the built-in dataset's,
or the paper's protocol for an official layout: ADE20K, Cityscapes, VOC) < a `--config` file (YAML or JSON,
keys are the option names) < the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from .. import cli
from ..configuration_segformer import VARIANTS
from ..data import BUILTIN_DATASET, FORMATS, parse_label_map
from ..data.layouts import preset as layout_preset
from ..errors import OptionError
from ..loss_segformer import LOSS_TYPES, LossSettings
from ..option_layers import OptionAdder, build_options, given_options
from .option_values import parse_class_weights, parse_numbers


@dataclass
class TrainingOptions:
    """Everything a run reads; the defaults are the SegFormer paper's recipe (Xie et al. 2021)."""

    # data
    dataset: str = BUILTIN_DATASET
    dataset_config: str | None = None
    dataset_format: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    validation_fraction: float = 0.1
    image_column: str | None = None
    label_column: str | None = None
    # datasets bigger than the disk
    streaming: bool = False
    shuffle_buffer: int = 1000
    audit_samples: int = 1000
    id2label: str | None = None
    do_reduce_labels: bool = False
    # mask values -> class ids, and the dataset audit's checks
    label_map: str | None = None
    allow_missing_classes: bool = False
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    check_data: bool = True
    # model
    model: str = "nvidia/mit-b0"
    revision: str | None = None
    token: str | None = None
    output_dir: str = "outputs/train"
    drop_path: float | None = None
    # input channels
    num_channels: int | None = None
    image_mean: list | None = None
    image_std: list | None = None
    image_stats: str = "default"
    # loss
    loss: str = "cross_entropy"
    class_weights: str | list | None = None
    focal_gamma: float = 2.0
    dice_weight: float = 1.0
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 100_000
    # augmentation
    crop_size: list = field(default_factory=lambda: [512, 512])
    scale: list = field(default_factory=lambda: [2048, 512])
    ratio_range: list = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    # evaluation protocol: what the saved image processor reproduces
    eval_short_side: int | None = 512
    eval_mode: str = "whole"
    slide_stride: int | None = None
    # optimisation
    learning_rate: float = 6e-5
    head_lr_scale: float = 10.0
    weight_decay: float = 0.01
    warmup_steps: int = 1500
    poly_power: float = 1.0
    max_steps: int = 160_000
    num_epochs: int | None = None
    batch_size: int = 2
    eval_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    num_workers: int = 4
    num_threads: int | None = None
    seed: int = 0
    # evaluation, logging and checkpoints
    logging_steps: int = 50
    eval_steps: str = "16000"
    checkpointing_steps: str = "16000"
    checkpoints_total_limit: int | None = 2
    resume: str | None = None
    report_to: str = "tensorboard"
    eval_only: bool = False
    num_overlays: int = 4
    push_to_hub: str | None = None
    private: bool = False
    license: str | None = None

    def __post_init__(self):
        for name in ("crop_size", "scale", "ratio_range"):
            setattr(self, name, list(getattr(self, name)))
        self.eval_short_side = self.eval_short_side or None  # 0 keeps the image size
        self.class_weights = parse_class_weights(self.class_weights)
        for name in ("image_mean", "image_std"):
            if getattr(self, name) is not None:
                setattr(self, name, parse_numbers(name, getattr(self, name)))
        self.validate()

    def validate(self):
        """Raises an OptionError naming the option (as on the command line) of the first bad value."""

        def bad(name, message):
            return OptionError(f"--{name.replace('_', '-')} {message}, got {getattr(self, name)!r}.")

        for name in ("max_steps", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "logging_steps",
                     "shuffle_buffer", "audit_samples"):  # fmt: skip
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("num_epochs", "max_train_samples", "max_eval_samples", "checkpoints_total_limit", "num_threads",
                     "slide_stride", "eval_short_side"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise bad(name, "must be a positive integer")
        for name in ("warmup_steps", "num_workers", "num_overlays", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise bad(name, "must be a non-negative integer")
        for name in ("learning_rate", "head_lr_scale", "poly_power"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be positive")
        if not 0 < self.validation_fraction < 1:
            raise bad("validation_fraction", "must be between 0 and 1")
        for name in ("crop_size", "scale"):
            value = getattr(self, name)
            if len(value) != 2 or any(not isinstance(side, int) or side < 1 for side in value):
                raise bad(name, "must be two positive integers")
        if len(self.ratio_range) != 2 or not 0 < self.ratio_range[0] <= self.ratio_range[1]:
            raise bad("ratio_range", "must be two numbers 0 < LOW <= HIGH")
        if not 0 <= self.flip_prob <= 1:
            raise bad("flip_prob", "must be between 0 and 1")
        for name, choices in (("eval_mode", ("whole", "slide")), ("mixed_precision", ("no", "fp16", "bf16"))):
            if getattr(self, name) not in choices:
                raise bad(name, f"must be one of {', '.join(choices)}")
        for name in ("eval_steps", "checkpointing_steps"):
            value = str(getattr(self, name))
            if value != "epoch" and not (value.isdigit() and int(value) > 0):
                raise bad(name, "must be a positive number of steps or 'epoch'")
        parse_label_map(self.label_map)  # its form; its targets against the labels once they are known
        self.validate_data(bad)
        self.validate_channels_and_loss(bad)

    def validate_data(self, bad):
        if self.dataset_format is not None and self.dataset_format not in FORMATS:
            raise bad("dataset_format", f"must be one of {', '.join(FORMATS)}")
        # A stream has no length (no epochs) and is never read whole (no image statistics).
        conflicts = [name for name, on in (("num_epochs", self.num_epochs is not None), ("image_stats", self.image_stats == "auto"),
                     *((n, str(getattr(self, n)) == "epoch") for n in ("eval_steps", "checkpointing_steps"))) if on]  # fmt: skip
        if self.streaming and conflicts:
            raise bad(conflicts[0], "does not apply to a stream (--streaming), which has no epochs and is never read whole")

    def validate_channels_and_loss(self, bad):
        if self.num_channels is not None and (not isinstance(self.num_channels, int) or self.num_channels < 1):
            raise bad("num_channels", "must be a positive integer")
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if values is not None and self.num_channels is not None and len(values) != self.num_channels:
                raise bad(name, f"needs one value per channel (--num-channels {self.num_channels})")
        if self.image_std is not None and any(not value > 0 for value in self.image_std):
            raise bad("image_std", "must be positive")
        if self.image_stats not in IMAGE_STATS:
            raise bad("image_stats", f"must be one of {', '.join(IMAGE_STATS)}")
        if self.image_stats == "auto" and (self.image_mean is not None or self.image_std is not None):
            raise bad("image_stats", "auto measures the mean and std: leave out --image-mean/--image-std")
        try:  # the loss's own checks; the class weights are checked once the labels are known
            self.loss_settings(class_weights=None).check(num_labels=None)
        except ValueError as error:
            # "`loss_type` must be ..." -> the option's name: the config field `loss_type` is --loss here.
            message = str(error).replace("`loss_type`", "`loss`")
            name = message.split("`")[1]
            raise bad(name, message.split("` ", 1)[1].split(", got ")[0]) from None
        if self.drop_path is not None and not 0.0 <= self.drop_path < 1.0:
            raise bad("drop_path", "must be in [0, 1)")

    def loss_settings(self, class_weights) -> LossSettings:
        """The loss of --loss and its options, with `class_weights` (--class-weights resolved)."""
        return LossSettings(
            loss_type=self.loss,
            class_weights=None if class_weights is None else tuple(class_weights),
            focal_gamma=self.focal_gamma,
            dice_weight=self.dice_weight,
            ohem_threshold=self.ohem_threshold,
            ohem_min_kept=self.ohem_min_kept,
        )


IMAGE_STATS = ("default", "auto")


FIELDS = {f.name for f in dataclasses.fields(TrainingOptions)}

# The built-in dataset's preset: a B0 from scratch, 96-pixel images, a few CPU minutes. From scratch
# needs a larger learning rate than fine-tuning a pretrained encoder. Its images are evaluated (and the
# saved processor runs them) at their own size.
BUILTIN_PRESET = dict(
    model="b0",
    crop_size=[96, 96],
    scale=[96, 96],
    eval_short_side=None,
    learning_rate=1e-3,
    warmup_steps=20,
    max_steps=600,
    batch_size=8,
    eval_batch_size=16,
    num_workers=0,
    logging_steps=10,
    eval_steps="100",
    checkpointing_steps="200",
)


def add_arguments(parser: argparse.ArgumentParser):
    """Every option defaults to None here, so that `options_from_args` can tell what was given; the help
    shows the layered default."""
    option = OptionAdder(parser, TrainingOptions(), BUILTIN_PRESET, "built-in dataset")

    pair_int = dict(nargs=2, type=int, metavar=("H", "W"))
    option.group("data")
    option("--dataset", "Hub dataset id, local folder (ADE20K, Cityscapes, VOC 2012 as unpacked, save_to_disk, "
           "Parquet/Arrow files, SPLIT/images + SPLIT/labels, imagefolder; docs/datasets.md) or 'builtin'")  # fmt: skip
    option("--dataset-format", "Read the folder as this official layout (else detected); its paper protocol "
           "(crops, evaluation) comes before the config file", choices=list(FORMATS))  # fmt: skip
    option("--dataset-config", "Configuration name of the Hub dataset (or of a data-files folder's README configs)")
    option("--train-split", "Training split (train also finds training)")
    option("--eval-split", "Validation split (also val, valid, dev, test); none: --validation-fraction held out")
    option("--validation-fraction", "Share of the training split held out when there is no eval split", type=float)
    option("--image-column", "Column holding the images; none: found by feature type and name (image, pixel_values, img)")
    option("--label-column", "Column holding the masks (single-channel class ids); none: found by type and name "
           "(label, annotation, semantic_segmentation, mask, gt)")  # fmt: skip
    option("--id2label", "Class names: a JSON file, a JSON object or 'name0,name1,...'; none: the dataset's (official "
           "list, id2label.json, ClassLabel of the masks), else the checkpoint's. One name makes a one-label (sigmoid) model whose masks hold 0 (background) and 1 "
           "(see docs/evaluation.md)")  # fmt: skip
    option("--streaming", "Train from a stream (Hub or local Parquet): each process its part, buffer-shuffled, "
           "resumable; the validation split is kept in memory (--max-eval-samples)", action=argparse.BooleanOptionalAction)  # fmt: skip
    option("--shuffle-buffer", "Samples in the shuffle buffer of --streaming", type=int)
    option("--audit-samples", "With --streaming, the dataset audit reads this many training samples (not all)", type=int)
    option("--do-reduce-labels", "Masks use 0 for 'other' (ADE20K): ignore 0 and shift ids down by one",
           action=argparse.BooleanOptionalAction)  # fmt: skip
    option("--label-map", "Remap mask values as stored before anything else: 'OLD:NEW,...' (e.g. 255:1 for 0/255 "
           "binary masks; 0:255,1:0,2:1), a JSON object or a .json file; values not named stay as they are. "
           "Applied first, then --do-reduce-labels", metavar="MAP")  # fmt: skip
    option("--allow-missing-classes", "Train even when a class has no pixel in the training split (the dataset "
           "audit stops the run otherwise)", action=argparse.BooleanOptionalAction)  # fmt: skip
    option("--max-train-samples", "Use only the first N training samples", type=int)
    option("--max-eval-samples", "Use only the first N validation samples", type=int)
    option("--check-data", "Check every sample (readable, same size, class ids in range) before training",
           action=argparse.BooleanOptionalAction)  # fmt: skip
    option.group("model")
    option("--model", f"Starting point: a variant ({', '.join(VARIANTS)}, also as mit-b0 / mit_b0 / segformer-b0) "
           "from scratch, or a local folder or Hub id of a saved model; a new head is made when the number of "
           "labels differs")  # fmt: skip
    option("--revision", "Hub revision (branch, tag or commit) of --model")
    option("--token", "Hub token for private repositories (--model, --push-to-hub)")
    option("--output-dir", "Folder of the results: model/ (ready for from_pretrained and the Hub), best/, "
           "checkpoints/, logs/, all_results.json, training_curves.png, predictions/")  # fmt: skip
    option("--drop-path", "Stochastic depth of the encoder: the drop rate of its last block (linear from 0); "
           "none: the checkpoint's, 0.1 for a variant (the paper's)", type=float)  # fmt: skip
    option.group("input channels (saved with the model in its image processor)")
    option("--num-channels", "Channels of the input images (1: grey, 4: RGBA or RGB-NIR, N: .npy arrays or "
           "multi-page TIFFs of N bands); a checkpoint's first patch embedding is adapted, not re-initialised; "
           "none: the checkpoint's, 3 for a variant", type=int)  # fmt: skip
    option("--image-mean", "Normalisation mean, one value per channel in 0..1; none: ImageNet's for 3 channels, "
           "0.449 for every channel otherwise", nargs="+", type=float)  # fmt: skip
    option("--image-std", "Normalisation standard deviation, one value per channel; none: ImageNet's for 3 "
           "channels, 0.226 for every channel otherwise", nargs="+", type=float)  # fmt: skip
    option("--image-stats", "'auto' measures the mean and std of every channel over the training images "
           "(before augmentation); 'default' takes --image-mean/--image-std", choices=list(IMAGE_STATS))  # fmt: skip
    option.group("loss (saved in the model's config, so Trainer and Hub code use it too)")
    option("--loss", "Loss: cross-entropy (binary with one label), focal, Dice, cross-entropy + Dice, or OHEM "
           "cross-entropy (the hard pixels only)", choices=list(LOSS_TYPES))  # fmt: skip
    option("--class-weights", "Weight of each class in the loss: 'none', 'auto' (from the dataset audit) or "
           "w0,w1,... (one per label; one label: the foreground's)")  # fmt: skip
    option("--focal-gamma", "Focusing parameter of the focal loss (0: cross-entropy)", type=float)
    option("--dice-weight", "Weight of the Dice term of --loss cross_entropy+dice", type=float)
    option("--ohem-threshold", "OHEM keeps the pixels whose true-class probability is below this", type=float)
    option("--ohem-min-kept", "...and at least this many pixels per image (the hardest)", type=int)
    option.group("augmentation")
    option("--crop-size", "Training crop", **pair_int)
    option("--scale", "Random-resize base scale (long side, short side), times --ratio-range", nargs=2, type=int)
    option("--ratio-range", "Random-resize ratio range", nargs=2, type=float, metavar=("LOW", "HIGH"))
    option("--cat-max-ratio", "Largest share of one class in a crop (10 tries); 1 disables", type=float)
    option("--flip-prob", "Horizontal flip probability", type=float)
    option("--photometric", "Photometric distortion (brightness, contrast, saturation, hue)",
           action=argparse.BooleanOptionalAction)  # fmt: skip
    option.group("evaluation protocol (saved with the model as its image processor)")
    option("--eval-short-side", "Resize validation images so the short side has this many pixels (aspect ratio "
           "kept, sides rounded up to a multiple of 32); 0 keeps their size. Metrics stay at the label "
           "resolution", type=int)  # fmt: skip
    option("--eval-mode", "Whole-image or sliding-window evaluation (square windows of the crop's short side)",
           choices=["whole", "slide"])  # fmt: skip
    option("--slide-stride", "Stride of the sliding window in pixels; none: 2/3 of the window", type=int)
    option.group("optimisation")
    option("--learning-rate", "AdamW learning rate of the encoder", type=float)
    option("--head-lr-scale", "Learning-rate multiplier of the decode head", type=float)
    option("--weight-decay", "AdamW weight decay (never on norms and biases)", type=float)
    option("--warmup-steps", "Linear warmup steps", type=int)
    option("--poly-power", "Power of the polynomial decay to 0", type=float)
    option("--max-steps", "Optimizer steps", type=int)
    option("--num-epochs", "Train for this many epochs instead of --max-steps", type=int)
    option("--batch-size", "Training batch size per process", type=int)
    option("--eval-batch-size", "Validation batch size per process", type=int)
    option("--gradient-accumulation-steps", "Batches per optimizer step", type=int)
    option("--max-grad-norm", "Clip gradients to this norm; none: no clipping, as the paper", type=float)
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
    option("--eval-only", "Only evaluate --model on the validation split", action=argparse.BooleanOptionalAction)
    option("--num-overlays", "Validation images drawn with their predictions", type=int)
    option("--push-to-hub", "Upload the final model folder to this Hub repository", metavar="REPO")
    option("--private", "Create the Hub repository as private", action=argparse.BooleanOptionalAction)
    option("--license", "License of the weights for the model card (when not derived from NVIDIA's)")


def options_from_args(args: argparse.Namespace) -> TrainingOptions:
    """Layers the defaults: paper < built-in preset < config file < command line."""
    given, from_file = given_options(args, FIELDS)
    dataset = given.get("dataset", from_file.get("dataset", BUILTIN_DATASET))
    dataset_format = given.get("dataset_format", from_file.get("dataset_format"))
    preset = BUILTIN_PRESET if dataset == BUILTIN_DATASET else layout_preset(dataset, dataset_format)
    return build_options(TrainingOptions, {**preset, **from_file, **given}, args)


def parse_options(argv=None) -> TrainingOptions:
    """The options of `segformer train` from a command line (list of strings)."""
    parser = argparse.ArgumentParser(prog="segformer train", formatter_class=cli.HelpFormatter)
    add_arguments(parser)
    return options_from_args(parser.parse_args(argv))
