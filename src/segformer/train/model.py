"""The model, its image processor, optimizer and learning-rate schedule of a run."""

from __future__ import annotations

import torch
from transformers import get_polynomial_decay_schedule_with_warmup

from ..configuration_segformer import SegFormerConfig, variant_name
from ..image_processing_segformer import SegFormerImageProcessor
from ..loading import load_model
from ..modeling_segformer import SegFormerForSemanticSegmentation
from .options import TrainingOptions


def is_variant(model: str) -> bool:
    """Whether --model names a variant to build from scratch rather than a checkpoint."""
    return variant_name(model) is not None


def build_image_processor(options: TrainingOptions) -> SegFormerImageProcessor:
    """The processor saved with the model: the evaluation's protocol, so that `pipeline()` and
    `segformer predict` on the saved model give the label maps the evaluation scored."""
    return SegFormerImageProcessor(short_side=options.eval_short_side, do_reduce_labels=options.do_reduce_labels)


def build_model(options: TrainingOptions, id2label: dict, log=print) -> SegFormerForSemanticSegmentation:
    """The model to train: a variant from scratch, or a checkpoint with a new head where needed."""
    labels = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()})  # num_labels follows
    if is_variant(options.model):
        variant = variant_name(options.model)
        log(f"Model: SegFormer-{variant.upper()} from scratch, {len(id2label)} labels.")
        return SegFormerForSemanticSegmentation(SegFormerConfig.from_variant(variant, **labels))
    model, info = load_model(
        options.model,
        revision=options.revision,
        token=options.token,
        device="cpu",
        ignore_mismatched_sizes=True,
        output_loading_info=True,
        **labels,
    )
    model.train()
    new_head = [str(key) for key in [*info["mismatched_keys"], *info["missing_keys"]] if "decode_head" in str(key)]
    if not new_head:
        log(f"Model: {options.model}, {len(id2label)} labels.")
        return model
    log(
        f"Model: {options.model} with a newly initialised decode head for {len(id2label)} labels "
        f"({len(new_head)} head tensors not taken from the checkpoint)."
    )
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
