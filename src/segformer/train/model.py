"""The model, its image processor, optimizer and learning-rate schedule of a run."""

from __future__ import annotations

import torch
from transformers import get_polynomial_decay_schedule_with_warmup

from ..configuration_segformer import SegFormerConfig, variant_name
from ..data.statistics import image_statistics
from ..errors import InputError, OptionError
from ..hub.card import find_variant
from ..image_processing_segformer import SegFormerImageProcessor
from ..loading import load_model
from ..loss_segformer import LossSettings
from ..modeling_segformer import SegFormerForSemanticSegmentation
from .options import TrainingOptions


def is_variant(model: str) -> bool:
    """Whether --model names a variant to build from scratch rather than a checkpoint."""
    return variant_name(model) is not None


def input_channels(options: TrainingOptions) -> int:
    """--num-channels, else the starting checkpoint's (3 for a variant, or where the checkpoint's config
    cannot be read now: `build_model` then reports why it cannot be loaded)."""
    if options.num_channels is not None or is_variant(options.model):
        return options.num_channels or 3
    try:
        config = SegFormerConfig.from_pretrained(options.model, revision=options.revision, token=options.token)
        return config.num_channels
    except (OSError, ValueError):
        return 3


def build_image_processor(options: TrainingOptions) -> SegFormerImageProcessor:
    """The processor saved with the model: the evaluation's protocol (resize, and with --eval-mode slide the
    window and stride) and the input's channels and normalisation, so that `segformer predict` on the saved
    model gives the label maps the evaluation scored (`pipeline()` too, for whole-image protocols)."""
    channels = input_channels(options)
    for name in ("image_mean", "image_std"):
        values = getattr(options, name)
        if values is not None and len(values) != channels:
            raise OptionError(f"--{name.replace('_', '-')} needs one value per channel ({channels}), got {values}.")
    window = min(options.crop_size) if options.eval_mode == "slide" else None
    return SegFormerImageProcessor(
        short_side=options.eval_short_side,
        do_reduce_labels=options.do_reduce_labels,
        num_channels=channels,
        image_mean=options.image_mean,
        image_std=options.image_std,
        window=window,
        stride=(options.slide_stride or max(1, 2 * window // 3)) if window else None,
    )


def use_image_statistics(processor: SegFormerImageProcessor, datasets: list, accelerator, log=print):
    """--image-stats auto: the mean and std of every channel over the first dataset's (the training
    split's) images, each process its share, summed exactly across processes; set in `processor` (so
    saved with the model) and in the transforms of every dataset."""
    def reduce(totals):
        return accelerator.reduce(totals.to(accelerator.device), "sum").cpu()

    mean, std = image_statistics(datasets[0], accelerator.process_index, accelerator.num_processes, reduce)
    processor.image_mean, processor.image_std = mean, std
    for dataset in datasets:
        dataset.transform.mean, dataset.transform.std = tuple(mean), tuple(std)
    log(f"Image statistics of the {datasets[0].split} split: mean {mean}, std {std}.")


def loss_settings(options: TrainingOptions, num_labels: int, auto_class_weights: list | None) -> LossSettings:
    """The loss of --loss and its options, --class-weights resolved and checked against the number of labels."""
    weights = options.class_weights
    if weights == "auto":
        if auto_class_weights is None:
            raise OptionError("--class-weights auto needs the dataset audit, which this run has not done.")
        weights = list(auto_class_weights)
    if weights is not None and len(weights) != num_labels:
        raise OptionError(
            f"--class-weights has {len(weights)} values but the model has {num_labels} labels: give one per label"
            + (" (one label: the foreground's weight)." if num_labels == 1 else ".")
        )
    return options.loss_settings(weights)


# Checkpoints that hold an encoder without a segmentation decoder: training starts from their encoder with a
# new decode head. What each is called in the log.
ENCODER_CHECKPOINTS = {"SegFormerForImageClassification": "image classification", "SegFormerModel": "encoder only"}
# The modules a checkpoint may lack (a new decode head) or have in excess (a classifier) without an error.
HEAD_PREFIXES = ("decode_head.", "classifier.")


def check_encoder_loaded(name: str, info: dict):
    """Raise an `InputError` when `from_pretrained`'s loading `info` shows an encoder tensor missing from the
    checkpoint, left over, or of another shape: the encoder must be taken whole, only heads may differ."""
    problems = {
        kind: [key for key in map(_key, info.get(kind) or ()) if not key.startswith(HEAD_PREFIXES)]
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(problems.values()):
        listed = "; ".join(f"{kind.split('_')[0]}: {', '.join(sorted(keys)[:8])}" for kind, keys in problems.items() if keys)
        raise InputError(
            f"cannot start from {name!r}: its encoder does not fit this model's ({listed}). The checkpoint is "
            "damaged, or not in this package's layout: convert it first with `segformer convert`."
        )


def _key(entry) -> str:
    # transformers lists a mismatched key with its two shapes.
    return str(entry[0] if isinstance(entry, tuple) else entry)


def build_model(
    options: TrainingOptions, id2label: dict, log=print, auto_class_weights: list | None = None
) -> SegFormerForSemanticSegmentation:
    """The model to train: a variant from scratch, or a checkpoint with a new head where needed (and its
    first patch embedding adapted to --num-channels); the loss of the options in its config.
    A classification checkpoint (`segformer pretrain`, nvidia/mit-b*) or an encoder alone gives its encoder,
    every tensor of it, and a new decode head. `auto_class_weights` are the weights `--class-weights auto`
    takes (from the dataset audit)."""
    labels = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()})  # num_labels follows
    settings = loss_settings(options, len(id2label), auto_class_weights)
    if settings != LossSettings(loss_type=settings.loss_type):
        weights = "" if settings.class_weights is None else f", class weights {list(settings.class_weights)}"
        log(f"Loss: {settings.loss_type}{weights}.")
    fields = {**labels, **settings.to_dict()}  # as config fields
    if options.drop_path is not None:
        fields["drop_path_rate"] = options.drop_path
    if is_variant(options.model):
        variant = variant_name(options.model)
        channels = options.num_channels or 3
        log(f"Model: SegFormer-{variant.upper()} from scratch, {len(id2label)} labels, {channels} input channels.")
        config = SegFormerConfig.from_variant(variant, num_channels=channels, **fields)
        return SegFormerForSemanticSegmentation(config)
    channels = {} if options.num_channels is None else dict(num_channels=options.num_channels)
    model, info = load_model(
        options.model,
        revision=options.revision,
        token=options.token,
        device="cpu",
        ignore_mismatched_sizes=True,
        output_loading_info=True,
        **channels,
        **fields,
    )
    check_encoder_loaded(options.model, info)
    source = (model.config.architectures or ["SegFormerForSemanticSegmentation"])[0]
    model.config.architectures = [type(model).__name__]  # what the config now describes
    model.train()
    new_head = [key for key in map(_key, [*info["mismatched_keys"], *info["missing_keys"]]) if "decode_head" in key]
    if source in ENCODER_CHECKPOINTS:
        variant = find_variant(model.config, "SegFormerModel")
        encoder = f"SegFormer-{variant.upper()} encoder" if variant else "the encoder"
        log(
            f"Model: {encoder} from {options.model} ({ENCODER_CHECKPOINTS[source]}), new decode head for "
            f"{len(id2label)} labels ({len(new_head)} head tensors newly initialised"
            + (", the classifier dropped)." if source == "SegFormerForImageClassification" else ").")
        )
    elif new_head:
        log(
            f"Model: {options.model} with a newly initialised decode head for {len(id2label)} labels "
            f"({len(new_head)} head tensors not taken from the checkpoint)."
        )
    else:
        log(f"Model: {options.model}, {len(id2label)} labels.")
    return model


def build_optimizer(model, options: TrainingOptions) -> torch.optim.AdamW:
    """AdamW with four groups: encoder / decode head (x head_lr_scale), with / without weight decay.
    Norm weights and biases (every 1-d parameter) get no weight decay, as in the paper's config."""
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        head = name.startswith("decode_head.")
        decay = parameter.ndim > 1
        key = (head, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": options.learning_rate * (options.head_lr_scale if head else 1.0),
                "weight_decay": options.weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(parameter)
    return torch.optim.AdamW(list(groups.values()), lr=options.learning_rate)


def build_scheduler(optimizer, options: TrainingOptions, max_steps: int, num_processes: int):
    """Linear warmup, then polynomial decay to 0. A prepared scheduler steps once per process per
    optimizer step, hence the factor."""
    return get_polynomial_decay_schedule_with_warmup(
        optimizer,
        num_warmup_steps=min(options.warmup_steps, max_steps - 1) * num_processes,
        num_training_steps=max_steps * num_processes,
        lr_end=0.0,
        power=options.poly_power,
    )
