"""The classifier to pretrain (a MiT encoder, its last stage after the stage LayerNorm mean-pooled, and a
linear layer: PVT v2's classification head, whose stages MiT keeps), its image processor (DeiT's test
protocol), the optimizer, the warmup + cosine schedule and the EMA of the weights."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch

from ..configuration_segformer import VARIANTS, SegFormerConfig, variant_name
from ..errors import InputError, OptionError
from ..image_processing_segformer import SegFormerImageProcessor
from ..loading import load_model
from ..modeling_segformer import SegFormerForImageClassification

CLASSIFIER = "SegFormerForImageClassification"


def check_model_option(model: str) -> str:
    """What --model is: "variant", "config" (a JSON file) or "checkpoint" (a classification model folder);
    anything else is an OptionError or InputError, raised before the data is read."""
    if variant_name(model):
        return "variant"
    path = Path(model)
    if path.is_file():
        return "config"
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise InputError(f"--model {model}: the folder has no config.json; give a variant ({', '.join(VARIANTS)}), "
                             "a SegFormerConfig JSON file or a SegFormerForImageClassification folder.")  # fmt: skip
        architectures = json.loads(config_file.read_text()).get("architectures") or []
        if CLASSIFIER not in architectures:
            what = ", ".join(architectures) or "no recorded architecture"
            raise InputError(
                f"--model {model} is a {what} checkpoint, not an image classifier: `segformer pretrain` trains "
                f"{CLASSIFIER}. Give a variant ({', '.join(VARIANTS)}) to pretrain an encoder from scratch; to "
                "fine-tune this checkpoint for segmentation use `segformer train --model`."
            )
        return "checkpoint"
    raise OptionError(f"--model {model!r} is no variant ({', '.join(VARIANTS)}, also spelt mit-b0, segformer-b0), "
                      "no config file and no model folder.")  # fmt: skip


def build_model(options, id2label: dict, log=print) -> SegFormerForImageClassification:
    """A classifier for `id2label`: a variant or config from scratch (with --drop-path-rate), or a
    classification checkpoint to go on from (a new classifier when the classes differ)."""
    labels = dict(id2label=id2label, label2id={name: i for i, name in id2label.items()})
    kind = check_model_option(options.model)
    if kind == "checkpoint":
        model, info = load_model(options.model, SegFormerForImageClassification, device="cpu",
                                 ignore_mismatched_sizes=True, output_loading_info=True,
                                 drop_path_rate=options.drop_path_rate, **labels)  # fmt: skip
        new = [key for key in [*info["mismatched_keys"], *info["missing_keys"]] if "classifier" in str(key)]
        log(f"Model: {options.model}, {len(id2label)} classes" + (" (a new classifier)." if new else "."))
        return model.train()
    if kind == "variant":
        config = SegFormerConfig.from_variant(options.model, drop_path_rate=options.drop_path_rate, **labels)
        name = f"MiT-{variant_name(options.model).upper()}"
    else:
        try:
            values = json.loads(Path(options.model).read_text())
            config = SegFormerConfig(**{**values, "drop_path_rate": options.drop_path_rate, **labels})
        except (OSError, ValueError, TypeError) as error:
            raise InputError(f"--model {options.model}: not a SegFormerConfig JSON file ({error}).") from None
        name = f"the encoder of {options.model}"
    config.architectures = [CLASSIFIER]
    log(f"Model: {name} from scratch, {len(id2label)} classes, stochastic depth {options.drop_path_rate}.")
    return SegFormerForImageClassification(config)


def build_image_processor(options) -> SegFormerImageProcessor:
    """DeiT's validation protocol, saved with the model: the short side to image_size / eval_crop_ratio
    (256 for 224), then the central image_size square."""
    return SegFormerImageProcessor(short_side=round(options.image_size / options.eval_crop_ratio), align=1,
                                   crop_size=options.image_size)  # fmt: skip


def build_optimizer(model, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; norms and biases (the 1-d parameters) without weight decay, as timm's optimizer factory
    that DeiT and PVT use (MiT has no position embedding to exempt)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


def cosine_with_warmup(optimizer, peak: float, warmup_from: float, floor: float, warmup_steps: int, total_steps: int,
                       num_processes: int = 1):  # fmt: skip
    """Linear warmup from `warmup_from` to `peak`, then a half cosine from `peak` to `floor` at the last
    step (timm's cosine scheduler, per step rather than per epoch). A prepared scheduler steps once per
    process per optimizer step, hence `num_processes`."""

    def rate(calls: int) -> float:
        step = calls // num_processes
        if step < warmup_steps:
            return warmup_from + (peak - warmup_from) * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda calls: rate(calls) / peak)


class WeightAverage:
    """An exponential moving average of a model's weights (and a copy of its buffers), updated after every
    optimizer step; `state_dict`/`load_state_dict` put it in the checkpoints (`register_for_checkpointing`)."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.mul_(self.decay).add_(current.detach().to(average.dtype), alpha=1 - self.decay)
            else:
                average.copy_(current)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict):
        self.model.load_state_dict(state)
