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

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm
from transformers import get_polynomial_decay_schedule_with_warmup

from . import data
from .configuration_segformer import VARIANTS, SegFormerConfig
from .inference import model_logits, sliding_window_logits
from .metrics import confusion_matrix, metrics_from_confusion, upsampled_predictions
from .modeling_segformer import SegFormerForSemanticSegmentation, image_processor_class

if TYPE_CHECKING:  # accelerate is imported when a run starts: `segformer --help` works without it
    from accelerate import Accelerator

# The paper's recipe and everything else a run needs; every option of the command overrides one.
DEFAULTS = dict(
    config=None,
    dataset=data.BUILTIN_DATASET,
    dataset_config=None,
    train_split="train",
    eval_split="validation",
    validation_fraction=0.1,
    image_column="image",
    label_column="label",
    id2label=None,
    do_reduce_labels=False,
    max_train_samples=None,
    max_eval_samples=None,
    check_data=True,
    model="nvidia/mit-b0",
    output_dir="outputs/train",
    crop_size=[512, 512],
    scale=[2048, 512],
    ratio_range=[0.5, 2.0],
    cat_max_ratio=0.75,
    flip_prob=0.5,
    photometric=True,
    eval_scale=[2048, 512],
    eval_mode="whole",
    slide_stride=None,
    learning_rate=6e-5,
    head_lr_scale=10.0,
    weight_decay=0.01,
    warmup_steps=1500,
    poly_power=1.0,
    max_steps=160_000,
    num_epochs=None,
    batch_size=2,
    eval_batch_size=1,
    gradient_accumulation_steps=1,
    max_grad_norm=None,
    mixed_precision="no",
    num_workers=4,
    num_threads=None,
    seed=0,
    logging_steps=50,
    eval_steps="16000",
    checkpointing_steps="16000",
    checkpoints_total_limit=2,
    resume=None,
    report_to="tensorboard",
    eval_only=False,
    num_overlays=4,
    push_to_hub=None,
    hub_private=None,
    license=None,
)

# The built-in dataset's preset: a B0 from scratch, 96-pixel images, a few CPU minutes. From scratch
# needs a larger learning rate than fine-tuning a pretrained encoder.
BUILTIN_PRESET = dict(
    model="b0",
    crop_size=[96, 96],
    scale=[96, 96],
    eval_scale=None,
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

TRAINER_STATE = "trainer_state.json"


# --- options ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser):
    """Every option defaults to None here, so that `resolve_options` can tell what was given."""

    target = parser  # the argument group the next options go to

    def option(name, help, **kwargs):
        dest = name.lstrip("-").replace("-", "_")
        if kwargs.get("action") is argparse.BooleanOptionalAction:
            help += f" (default: {'on' if DEFAULTS[dest] else 'off'})"
        elif DEFAULTS[dest] is not None or dest in BUILTIN_PRESET:
            shown = _shown(DEFAULTS[dest])
            if dest in BUILTIN_PRESET:
                shown += f"; built-in dataset: {_shown(BUILTIN_PRESET[dest])}"
            help += f" (default: {shown})"
        target.add_argument(name, help=help, default=None, **kwargs)

    pair_int = dict(nargs=2, type=int, metavar=("H", "W"))
    option("--config", "YAML or JSON file of options (keys are the option names); the command line wins.")
    target = parser.add_argument_group("data")
    option(
        "--dataset",
        "Hub dataset id, local folder (SPLIT/images + SPLIT/labels, or an imagefolder with "
        "metadata.jsonl) or 'builtin', the generated textures dataset",
    )
    option("--dataset-config", "Configuration name of the Hub dataset.")
    option("--train-split", "Training split")
    option("--eval-split", "Validation split; without it --validation-fraction of the training split is held out")
    option("--validation-fraction", "Share of the training split held out when there is no eval split", type=float)
    option("--image-column", "Column holding the images")
    option("--label-column", "Column holding the masks (single-channel class ids)")
    option(
        "--id2label",
        "Class names: a JSON file, a JSON object or 'name0,name1,...'. Default: the dataset's "
        "(id2label.json in the repo or folder), else the checkpoint's.",
    )
    option(
        "--do-reduce-labels",
        "Masks use 0 for 'other' (ADE20K): ignore 0 and shift ids down by one",
        action=argparse.BooleanOptionalAction,
    )
    option("--max-train-samples", "Use only the first N training samples", type=int)
    option("--max-eval-samples", "Use only the first N validation samples", type=int)
    option(
        "--check-data",
        "Check every sample (readable, same size, class ids in range) before training",
        action=argparse.BooleanOptionalAction,
    )
    target = parser.add_argument_group("model")
    option(
        "--model",
        f"Starting point: a variant name ({', '.join(VARIANTS)}) from scratch, or a local folder or "
        "Hub id of a saved model; a new head is made when the number of labels differs",
    )
    option(
        "--output-dir",
        "Folder of the results: model/ (the final model, ready for from_pretrained and the Hub), "
        "best/, checkpoints/, logs/, all_results.json, training_curves.png, predictions/",
    )
    target = parser.add_argument_group("augmentation")
    option("--crop-size", "Training crop", **pair_int)
    option("--scale", "Random-resize base scale (long side, short side), times --ratio-range", nargs=2, type=int)
    option("--ratio-range", "Random-resize ratio range", nargs=2, type=float, metavar=("LOW", "HIGH"))
    option("--cat-max-ratio", "Largest share of one class in a crop (10 tries); 1 disables", type=float)
    option("--flip-prob", "Horizontal flip probability", type=float)
    option(
        "--photometric",
        "Photometric distortion (brightness, contrast, saturation, hue)",
        action=argparse.BooleanOptionalAction,
    )
    option(
        "--eval-scale",
        "Resize validation images to fit (long side, short side); metrics stay at the label "
        "resolution. Give 0 0 to keep them as they are",
        nargs=2,
        type=int,
    )
    option(
        "--eval-mode",
        "Whole-image or sliding-window evaluation (square windows of the crop's short side)",
        choices=["whole", "slide"],
    )
    option("--slide-stride", "Stride of the sliding window in pixels (default: 2/3 of the window)", type=int)
    target = parser.add_argument_group("optimisation")
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
    option("--max-grad-norm", "Clip gradients to this norm (default: no clipping, as the paper)", type=float)
    option("--mixed-precision", "Mixed precision", choices=["no", "fp16", "bf16"])
    option("--num-workers", "Data-loading worker processes", type=int)
    option("--num-threads", "CPU threads of each process (None: torch's choice)", type=int)
    option("--seed", "Random seed (weights, data order, augmentation)", type=int)
    target = parser.add_argument_group("evaluation, logging and checkpoints")
    option("--logging-steps", "Log the training loss every N steps", type=int)
    option("--eval-steps", "Evaluate every N steps or 'epoch' (and always at the end)")
    option("--checkpointing-steps", "Save the training state every N steps or 'epoch'")
    option("--checkpoints-total-limit", "Keep only the last K checkpoints", type=int)
    option("--resume", "Resume from a checkpoint folder or 'latest' (the newest in OUTPUT_DIR/checkpoints)")
    option("--report-to", "Trackers for Accelerate ('tensorboard', 'wandb', 'all' or 'none')")
    option("--eval-only", "Only evaluate --model on the validation split", action=argparse.BooleanOptionalAction)
    option("--num-overlays", "Validation images drawn with their predictions", type=int)
    option("--push-to-hub", "Upload the final model folder to this Hub repository", metavar="REPO")
    option("--hub-private", "Create the Hub repository as private", action=argparse.BooleanOptionalAction)
    option("--license", "License of the weights for the model card (when not derived from NVIDIA's)")


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def read_config_file(path: str) -> dict:
    import yaml  # YAML is a superset of JSON, so one reader covers both

    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping of option names to values.")
    values = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Config file {path} has unknown options {unknown}; valid ones: {sorted(DEFAULTS)}.")
    return values


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    """Layers the defaults: paper < built-in preset < config file < command line."""
    given = {key: value for key, value in vars(args).items() if value is not None and key in DEFAULTS}
    from_file = read_config_file(given["config"]) if given.get("config") else {}
    dataset = given.get("dataset", from_file.get("dataset", DEFAULTS["dataset"]))
    preset = BUILTIN_PRESET if dataset == data.BUILTIN_DATASET else {}
    options = argparse.Namespace(**{**DEFAULTS, **preset, **from_file, **given})
    if options.eval_scale is not None and not any(options.eval_scale):
        options.eval_scale = None
    return options


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="segformer.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return parser.parse_args(argv)


def _every(value, steps_per_epoch: int) -> int:
    """Steps between two events from an option that is a number of steps or 'epoch'."""
    return steps_per_epoch if str(value) == "epoch" else int(value)


# --- data and model -----------------------------------------------------------------------------------


def is_variant(model: str) -> bool:
    """Whether --model names a variant to build from scratch rather than a checkpoint."""
    return model.lower().removeprefix("mit-") in VARIANTS


def resolve_id2label(args) -> dict:
    """--id2label, else the dataset's own, else the starting checkpoint's."""
    if args.id2label:
        return data.read_id2label(args.id2label)
    if args.dataset == data.BUILTIN_DATASET:
        return dict(data.BUILTIN_ID2LABEL)
    if Path(args.dataset).is_dir():
        found = next(Path(args.dataset).rglob("id2label.json"), None)
        if found:
            return data.read_id2label(str(found))
    else:
        found = data.hub_id2label(args.dataset)
        if found:
            return found
    if not is_variant(args.model):
        config = SegFormerConfig.from_pretrained(args.model)
        # An ImageNet encoder's labels are no segmentation classes.
        if any("SemanticSegmentation" in name for name in config.architectures or []):
            return {int(i): name for i, name in config.id2label.items()}
    raise ValueError(
        f"No class names found for dataset {args.dataset!r} (no id2label.json) nor in the checkpoint: "
        "give them with --id2label (a JSON file, a JSON object or 'name0,name1,...')."
    )


def build_datasets(args) -> tuple:
    """(train, validation) SegmentationDatasets and id2label."""
    train_split, eval_split = data.load_splits(
        args.dataset,
        config_name=args.dataset_config,
        train_split=args.train_split,
        eval_split=args.eval_split,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
    )
    if args.max_train_samples:
        train_split = train_split.select(range(min(args.max_train_samples, len(train_split))))
    if args.max_eval_samples:
        eval_split = eval_split.select(range(min(args.max_eval_samples, len(eval_split))))
    id2label = resolve_id2label(args)
    processor = build_image_processor(args)
    norm = dict(mean=tuple(processor.image_mean), std=tuple(processor.image_std))
    train_transform = data.TrainTransform(
        crop_size=tuple(args.crop_size),
        scale=tuple(args.scale),
        ratio_range=tuple(args.ratio_range),
        cat_max_ratio=args.cat_max_ratio,
        flip_prob=args.flip_prob,
        photometric=args.photometric,
        **norm,
    )
    eval_transform = data.EvalTransform(scale=tuple(args.eval_scale) if args.eval_scale else None, **norm)
    common = dict(
        num_labels=len(id2label),
        image_column=args.image_column,
        label_column=args.label_column,
        do_reduce_labels=args.do_reduce_labels,
        seed=args.seed,
    )
    train = data.SegmentationDataset(train_split, train_transform, split=args.train_split, **common)
    evaluation = data.SegmentationDataset(eval_split, eval_transform, split=args.eval_split, **common)
    return train, evaluation, id2label


def check_samples(dataset: data.SegmentationDataset, accelerator: Accelerator):
    """Reads every sample once (each process its share) so bad data fails before training starts."""
    indices = range(accelerator.process_index, len(dataset), accelerator.num_processes)
    for index in tqdm(indices, desc=f"checking {dataset.split}", disable=not accelerator.is_local_main_process):
        dataset.load_pair(index)


def build_image_processor(args):
    """The processor saved with the model: what inference needs to reproduce evaluation's input."""
    height, width = args.crop_size
    return image_processor_class()(size={"height": height, "width": width}, do_reduce_labels=args.do_reduce_labels)


def build_model(args, id2label: dict, accelerator: Accelerator) -> SegFormerForSemanticSegmentation:
    """The model to train: a variant from scratch, or a checkpoint with a new head where needed."""
    labels = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()})  # num_labels follows
    if is_variant(args.model):
        accelerator.print(f"Model: SegFormer-{args.model.upper()} from scratch, {len(id2label)} labels.")
        return SegFormerForSemanticSegmentation(SegFormerConfig.from_variant(args.model, **labels))
    model, info = SegFormerForSemanticSegmentation.from_pretrained(
        args.model, ignore_mismatched_sizes=True, output_loading_info=True, **labels
    )
    new_head = [str(key) for key in [*info["mismatched_keys"], *info["missing_keys"]] if "decode_head" in str(key)]
    if not new_head:
        accelerator.print(f"Model: {args.model}, {len(id2label)} labels.")
        return model
    accelerator.print(
        f"Model: {args.model} with a newly initialised decode head for {len(id2label)} labels "
        f"({len(new_head)} head tensors not taken from the checkpoint)."
    )
    return model


def build_optimizer(model, args) -> torch.optim.AdamW:
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
                "lr": args.learning_rate * (args.head_lr_scale if head else 1.0),
                "weight_decay": args.weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(parameter)
    return torch.optim.AdamW(list(groups.values()), lr=args.learning_rate)


# --- evaluation -------------------------------------------------------------------------------------


def predict(model, batch: dict, args) -> list:
    """Class ids of every sample of a padded batch at its label resolution."""
    pixel_values = batch["pixel_values"]
    sizes = batch["image_sizes"].tolist()
    if args.eval_mode == "slide":
        window = min(args.crop_size)
        stride = args.slide_stride or max(1, 2 * window // 3)
        logits = [
            sliding_window_logits(model, image[None, :, :h, :w], window, stride)
            for image, (h, w) in zip(pixel_values, sizes)
        ]
    else:
        full = model_logits(model, pixel_values)
        logits = [full[i : i + 1, :, :h, :w] for i, (h, w) in enumerate(sizes)]
    return [upsampled_predictions(x, size)[0] for x, size in zip(logits, batch["label_sizes"].tolist())]


def build_eval_loader(dataset, args, accelerator: Accelerator) -> torch.utils.data.DataLoader:
    """Each process gets every num_processes-th sample, with no padding or repeats: Accelerate's
    even batches would repeat samples on short processes and count them twice in a summed matrix."""
    shard = torch.utils.data.Subset(dataset, range(accelerator.process_index, len(dataset), accelerator.num_processes))
    return torch.utils.data.DataLoader(
        shard,
        batch_size=args.eval_batch_size,
        num_workers=args.num_workers,
        collate_fn=data.pad_collate,
    )


def sync_buffers(model, accelerator: Accelerator):
    """Every process takes the main process's BatchNorm statistics, the ones that get saved: DDP
    broadcasts them before each training forward, which then updates each process's copy with its
    own batch, so after training they differ."""
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast

        for buffer in model.buffers():
            buffer.copy_(broadcast(buffer.clone(), from_process=0))


@torch.no_grad()
def evaluate(model, loader, accelerator: Accelerator, args, id2label: dict) -> dict:
    """Metrics of `model` over the whole validation set: a confusion matrix accumulated on the device
    by every process over its shard, then summed across processes."""
    model = accelerator.unwrap_model(model)  # no DDP collectives: processes may hold unequal shards
    sync_buffers(model, accelerator)
    was_training = model.training
    model.eval()
    num_labels = model.config.num_labels
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.long, device=accelerator.device)
    for batch in tqdm(loader, desc="evaluating", leave=False, disable=not accelerator.is_local_main_process):
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        with accelerator.autocast():
            predictions = predict(model, batch, args)
        for prediction, labels, (h, w) in zip(predictions, batch["labels"], batch["label_sizes"].tolist()):
            confusion += confusion_matrix(prediction, labels[:h, :w], num_labels)
    confusion = accelerator.reduce(confusion, reduction="sum")
    model.train(was_training)
    return metrics_from_confusion(confusion, id2label)


# --- checkpoints --------------------------------------------------------------------------------------


def checkpoint_dirs(output_dir) -> list:
    """Complete checkpoints, oldest first. A checkpoint is complete once it has its final name:
    `save_checkpoint` writes into a hidden partial folder and renames it at the end."""
    root = Path(output_dir) / "checkpoints"
    found = [p for p in root.glob("step_*") if (p / TRAINER_STATE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(accelerator: Accelerator, output_dir, state: dict, limit: int = None) -> Path:
    """`save_state` into `.partial_step_N`, then an atomic rename to `step_N`: a kill during the save
    leaves the previous checkpoints as they were. Keeps the newest `limit` checkpoints."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"step_{state['step']}"
    partial = root / f".partial_step_{state['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left over by a killed save
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / TRAINER_STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in checkpoint_dirs(output_dir)[: -limit if limit else 0]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, output_dir, resume: str) -> dict:
    """Restores model, optimizer, scheduler and RNG states; returns the trainer state (step, history)."""
    if resume == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {Path(output_dir) / 'checkpoints'}.")
        path = found[-1]
    else:
        path = Path(resume)
        if not (path / TRAINER_STATE).is_file():
            raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint folder (no {TRAINER_STATE}).")
    accelerator.load_state(str(path), load_kwargs={"weights_only": True})
    accelerator.print(f"Resumed from {path}.")
    return json.loads((path / TRAINER_STATE).read_text())


# --- outputs ------------------------------------------------------------------------------------------


def save_model(accelerator: Accelerator, model, processor, folder: Path):
    """A folder that `from_pretrained` and `pipeline` load: weights, config, code, image processor."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        processor.save_pretrained(folder)
    accelerator.unwrap_model(model).save_pretrained(
        folder, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )


def plot_curves(history: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, iou_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps, losses = zip(*history["loss"]) if history["loss"] else ((), ())
    loss_axis.plot(steps, losses, color="tab:red")
    loss_axis.set(title="training loss", xlabel="step", ylabel="cross-entropy")
    loss_axis.grid(alpha=0.3)
    steps, ious = zip(*history["mean_iou"]) if history["mean_iou"] else ((), ())
    iou_axis.plot(steps, ious, marker="o", color="tab:blue")
    iou_axis.set(title="validation mIoU", xlabel="step", ylabel="mIoU", ylim=(0, 1))
    iou_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_overlays(model, dataset: data.SegmentationDataset, args, id2label: dict, folder: Path, device) -> list:
    """PNGs of validation images: the image, its ground truth, the prediction and the prediction
    blended over the image, with a legend of the classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .visualization import colorize, default_palette, overlay

    palette = default_palette(len(id2label))
    handles = [Patch(color=palette[i] / 255, label=name) for i, name in sorted(id2label.items())]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(min(args.num_overlays, len(dataset))):
        image, _ = dataset.load_pair(index)
        batch = {k: v.to(device) for k, v in data.pad_collate([dataset[index]]).items()}
        with torch.no_grad():
            prediction = predict(model.eval(), batch, args)[0].cpu().numpy()
        label = batch["labels"][0].cpu().numpy()
        panels = [
            ("image", image),
            ("ground truth", colorize(label, palette)),
            ("prediction", colorize(prediction, palette)),
            ("prediction over the image", overlay(image, prediction, palette)),
        ]
        figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.9))
        for axis, (title, picture) in zip(axes, panels):
            axis.imshow(picture, interpolation="nearest")
            axis.set_title(title)
            axis.axis("off")
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False)
        figure.tight_layout(rect=(0, 0.08, 1, 1))
        path = folder / f"prediction_{index}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def write_results(output_dir: Path, results: dict):
    (output_dir / "all_results.json").write_text(json.dumps(results, indent=2))


def finish(accelerator, model, processor, args, id2label, eval_data, results: dict, history: dict):
    """The final model folder with its card (what --push-to-hub uploads), results and pictures."""
    from .hub import push_to_hub, write_model_card

    output_dir = Path(args.output_dir)
    model_dir = output_dir / "model"
    save_model(accelerator, model, processor, model_dir)
    if not accelerator.is_main_process:
        return
    write_results(output_dir, results)
    if history["loss"] or history["mean_iou"]:
        plot_curves(history, output_dir / "training_curves.png")
    draw_overlays(
        accelerator.unwrap_model(model), eval_data, args, id2label, output_dir / "predictions", accelerator.device
    )
    card_metrics = {k: round(v, 4) for k, v in results.items() if k.startswith("eval_") and not math.isnan(v)}
    write_model_card(
        model_dir,
        accelerator.unwrap_model(model).config,
        source=None if is_variant(args.model) else args.model,
        dataset=data.BUILTIN_CARD_NAME if args.dataset == data.BUILTIN_DATASET else args.dataset,
        metrics={"mean_iou": card_metrics.pop("eval_mean_iou"), **card_metrics},
        license=args.license,
        repo_id=args.push_to_hub or str(model_dir),
    )
    if args.push_to_hub:
        url = push_to_hub(model_dir, args.push_to_hub, private=args.hub_private)
        accelerator.print(f"Uploaded {model_dir} to {url}")


# --- training -----------------------------------------------------------------------------------------


def tracker_config(args) -> dict:
    """Options as the scalars and strings trackers accept."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()}


def build_train_loader(train_data, args) -> torch.utils.data.DataLoader:
    loader = torch.utils.data.DataLoader(
        train_data,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        # Its own generator keeps worker seeding off the global RNG, which dropout draws from.
        generator=torch.Generator().manual_seed(args.seed),
    )
    if len(loader) == 0:
        raise ValueError(
            f"The training split has {len(train_data)} samples, fewer than one batch of {args.batch_size}."
        )
    return loader


def build_scheduler(optimizer, args, max_steps: int, num_processes: int):
    """Linear warmup, then polynomial decay to 0. A prepared scheduler steps once per process per
    optimizer step, hence the factor."""
    return get_polynomial_decay_schedule_with_warmup(
        optimizer,
        num_warmup_steps=min(args.warmup_steps, max_steps - 1) * num_processes,
        num_training_steps=max_steps * num_processes,
        lr_end=0.0,
        power=args.poly_power,
    )


def train(accelerator, model, train_data, eval_loader, args, id2label) -> tuple:
    """The training loop; returns the final metrics, the trainer state and the prepared model."""
    train_loader = build_train_loader(train_data, args)
    optimizer = build_optimizer(model, args)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_steps = args.num_epochs * steps_per_epoch if args.num_epochs else args.max_steps
    scheduler = accelerator.prepare(build_scheduler(optimizer, args, max_steps, accelerator.num_processes))
    eval_every = _every(args.eval_steps, steps_per_epoch)
    save_every = _every(args.checkpointing_steps, steps_per_epoch)

    state = {"step": 0, "best_mean_iou": None, "best_step": None, "history": {"loss": [], "mean_iou": []}}
    if args.resume:
        state = load_checkpoint(accelerator, args.output_dir, args.resume)
    accelerator.print(
        f"Training {max_steps} steps: {len(train_data)} samples, {steps_per_epoch} steps per epoch, batch "
        f"{args.batch_size} x {args.gradient_accumulation_steps} accumulation x {accelerator.num_processes} processes."
    )
    progress = tqdm(
        total=max_steps, initial=state["step"], desc="training", disable=not accelerator.is_local_main_process
    )
    running_loss = torch.zeros((), device=accelerator.device)
    running_count = 0
    metrics = None
    start_time, start_step = time.perf_counter(), state["step"]
    model.train()
    for epoch in range(state["step"] // steps_per_epoch, math.ceil(max_steps / steps_per_epoch)):
        train_loader.set_epoch(epoch)
        train_data.set_epoch(epoch)
        done_in_epoch = state["step"] - epoch * steps_per_epoch
        loader = train_loader
        if done_in_epoch:
            loader = accelerator.skip_first_batches(train_loader, done_in_epoch * args.gradient_accumulation_steps)
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running_loss += loss.detach()
            running_count += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            step = state["step"]
            progress.update(1)
            if step % args.logging_steps == 0 or step == max_steps:
                mean_loss = accelerator.reduce(running_loss / running_count, reduction="mean").item()
                running_loss.zero_()
                running_count = 0
                state["history"]["loss"].append((step, mean_loss))
                progress.set_postfix(loss=f"{mean_loss:.3f}")
                accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0]}, step=step)
            if step % eval_every == 0 or step == max_steps:
                metrics = evaluate(model, eval_loader, accelerator, args, id2label)
                track_evaluation(accelerator, model, state, metrics, args)
            if step % save_every == 0 and step < max_steps:
                save_checkpoint(accelerator, args.output_dir, state, args.checkpoints_total_limit)
            if step >= max_steps:
                break
    progress.close()
    elapsed = time.perf_counter() - start_time
    samples = (
        (state["step"] - start_step) * args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    )
    state["train_runtime_s"] = round(elapsed, 1)
    state["train_samples_per_second"] = round(samples / elapsed, 2) if elapsed else None
    return metrics, state, model


def track_evaluation(accelerator, model, state: dict, metrics: dict, args):
    """Logs an evaluation and keeps the best model so far in OUTPUT_DIR/best."""
    step = state["step"]
    state["history"]["mean_iou"].append((step, metrics["mean_iou"]))
    accelerator.log({f"eval/{k}": v for k, v in metrics.items() if not math.isnan(v)}, step=step)
    accelerator.print(
        f"step {step}: validation mIoU {metrics['mean_iou']:.4f}, pixel accuracy {metrics['overall_accuracy']:.4f}"
    )
    if state["best_mean_iou"] is None or metrics["mean_iou"] > state["best_mean_iou"]:
        state["best_mean_iou"], state["best_step"] = metrics["mean_iou"], step
        save_model(accelerator, model, build_image_processor(args), Path(args.output_dir) / "best")


def main(args: argparse.Namespace):
    """The `segformer train` command (a console script must not return the results)."""
    run(args)


def run(args: argparse.Namespace) -> dict:
    """Trains (or only evaluates) as the options say; returns what `all_results.json` holds."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    args = resolve_options(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    report_to = None if args.report_to == "none" else args.report_to
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=report_to,
        project_dir=str(output_dir / "logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    set_seed(args.seed)
    train_data, eval_data, id2label = build_datasets(args)
    if args.check_data:
        check_samples(eval_data, accelerator)
        if not args.eval_only:
            check_samples(train_data, accelerator)
    model = build_model(args, id2label, accelerator)
    processor = build_image_processor(args)
    eval_loader = build_eval_loader(eval_data, args, accelerator)
    if report_to:
        accelerator.init_trackers("segformer", config=tracker_config(args))
    if args.eval_only:
        model = accelerator.prepare(model)
        metrics = evaluate(model, eval_loader, accelerator, args, id2label)
        state = {"step": 0, "history": {"loss": [], "mean_iou": []}}
    else:
        metrics, state, model = train(accelerator, model, train_data, eval_loader, args, id2label)
    results = {f"eval_{k}": v for k, v in metrics.items()}
    results.update({k: v for k, v in state.items() if k != "history"})
    results["eval_samples"] = len(eval_data)
    accelerator.print(
        f"Validation mIoU {metrics['mean_iou']:.4f} (pixel accuracy {metrics['overall_accuracy']:.4f}) on "
        f"{len(eval_data)} images; wrote the model to {output_dir / 'model'} and the results to {output_dir}"
    )
    finish(accelerator, model, processor, args, id2label, eval_data, results, state["history"])
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main(parse_args())
