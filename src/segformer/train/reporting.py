"""What a run leaves for people: the dataset audit (table, `dataset_report.json`, `dataset_report.png`),
the final model folder with its card, `all_results.json`, the training curves and pictures of validation
predictions."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch

from .. import data
from ..evaluation.engine import label_maps
from ..visualization import colorize, config_palette, default_palette, overlay, preview
from .model import is_variant


def report_dataset(accelerator, audits: dict, id2label: dict, folder: Path, **how_masks_map) -> dict:
    """Prints the audit table and (main process) writes dataset_report.json and its bar chart. Written
    before the audit's checks run, so a run they stop leaves the report to look at. `how_masks_map`:
    label_map and do_reduce_labels, recorded in the report."""
    report = data.dataset_report(audits, id2label, **how_masks_map)
    accelerator.print(data.format_table(audits, id2label))
    if accelerator.is_main_process:
        (folder / "dataset_report.json").write_text(json.dumps(report, indent=1))
        plot_class_shares(audits, id2label, folder / "dataset_report.png")
    return report


def plot_class_shares(audits: dict, id2label: dict, path: Path):
    """Horizontal bars (names stay readable with many classes): each class's share of the labelled pixels
    per split, on a log axis when the shares span more than two decades; a class with no pixel says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_labels = len(id2label)
    shares = {}
    for role, audit in audits.items():
        labelled = max(audit.total_pixels - audit.ignored_pixels, 1)
        shares[role] = [count / labelled for count in audit.pixel_counts]
    present = [share for values in shares.values() for share in values if share > 0]
    log = bool(present) and max(present) / min(present) > 100
    height = 0.8 / len(audits)
    figure, axis = plt.subplots(figsize=(7.5, 1.2 + 0.32 * num_labels * len(audits) ** 0.5))
    for offset, (role, values) in enumerate(shares.items()):
        positions = [c + (offset - (len(audits) - 1) / 2) * height for c in range(num_labels)]
        axis.barh(positions, values, height=height, label=f"{audits[role].split} ({audits[role].num_images} images)",
                  color=("tab:blue", "tab:orange")[offset % 2])  # fmt: skip
        for position, value in zip(positions, values):
            if value == 0:
                axis.annotate("no pixel", (0, position), xytext=(3, 0), textcoords="offset points", va="center",
                              fontsize=8, color="tab:red")  # fmt: skip
    axis.set_yticks(range(num_labels), [str(id2label[c]) for c in range(num_labels)])
    axis.invert_yaxis()  # class 0 on top, as in the table
    if log:
        axis.set_xscale("log")
        axis.set_xlim(left=min(present) / 2)
    ignored = ", ".join(f"{a.split} {a.ignored_share:.1%}" for a in audits.values())
    axis.set(xlabel="share of labelled pixels" + (" (log scale)" if log else ""),
             title=f"Pixels per class (ignored: {ignored})")  # fmt: skip
    axis.grid(axis="x", alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def save_model(accelerator, model, processor, folder: Path):
    """A folder that `from_pretrained` and `pipeline` load: weights, config, code, image processor."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        processor.save_pretrained(folder)
    accelerator.unwrap_model(model).save_pretrained(
        folder, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )


def loss_label(config) -> str:
    """What the training loss curve shows: the loss of `config`, e.g. "focal loss (class-weighted)"."""
    weighted = " (class-weighted)" if config.class_weights is not None else ""
    return f"{config.loss_type.replace('_', '-')} loss{weighted}"


def plot_curves(history: dict, path: Path, config):
    """The training loss (labelled with `config`'s loss) and the validation mIoU against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, iou_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps, losses = zip(*history["loss"]) if history["loss"] else ((), ())
    loss_axis.plot(steps, losses, color="tab:red")
    loss_axis.set(title="training loss", xlabel="step", ylabel=loss_label(config))
    loss_axis.grid(alpha=0.3)
    steps, ious = zip(*history["mean_iou"]) if history["mean_iou"] else ((), ())
    iou_axis.plot(steps, ious, marker="o", color="tab:blue")
    iou_axis.set(title="validation mIoU", xlabel="step", ylabel="mIoU", ylim=(0, 1))
    iou_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_overlays(model, dataset: data.SegmentationDataset, settings, id2label: dict, folder: Path, count: int) -> list:
    """PNGs of validation images: the image, its ground truth, the prediction and the prediction
    blended over the image, with a legend of the classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    palette = config_palette(model.config)
    if len(palette) < len(id2label):  # a one-label model's maps: background and its class
        palette = default_palette(len(id2label))
    handles = [Patch(color=palette[i] / 255, label=name) for i, name in sorted(id2label.items())]
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    paths = []
    for index in range(min(count, len(dataset))):
        image, label = dataset.load_pair(index)
        prediction = label_maps(model, data.pad_collate([dataset[index]]), settings)[0].cpu().numpy()
        panels = [
            ("image", preview(image)),
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


def hyperparameters(options) -> dict:
    """The options a reader of the model card wants to know to reproduce the run."""
    keys = ("model", "crop_size", "scale", "ratio_range", "learning_rate", "head_lr_scale", "weight_decay",
            "warmup_steps", "poly_power", "max_steps", "num_epochs", "batch_size", "gradient_accumulation_steps",
            "max_grad_norm", "mixed_precision", "eval_short_side", "eval_mode", "seed")  # fmt: skip
    values = asdict(options)
    return {key: values[key] for key in keys if values[key] is not None}


def finish(accelerator, model, processor, options, eval_data, settings, evaluation, results: dict, history: dict):
    """The final model folder with its card (what --push-to-hub uploads), results, pictures and the
    evaluation report of `segformer evaluate` (OUTPUT_DIR/evaluation), whose numbers go into the card."""
    from ..evaluation.report import REPORT_FILE, headline
    from ..evaluation.run import write_outputs
    from ..hub import push_to_hub, write_model_card
    from ..hub.results import eval_results

    output_dir = Path(options.output_dir)
    model_dir = output_dir / "model"
    save_model(accelerator, model, processor, model_dir)
    if not accelerator.is_main_process:
        return
    (output_dir / "all_results.json").write_text(json.dumps(results, indent=2))
    curves = None
    if history["loss"] or history["mean_iou"]:
        curves = output_dir / "training_curves.png"
        plot_curves(history, curves, accelerator.unwrap_model(model).config)
    dataset = data.BUILTIN_CARD_NAME if options.dataset == data.BUILTIN_DATASET else options.dataset
    unwrapped = accelerator.unwrap_model(model)
    with torch.no_grad():
        pictures = draw_overlays(unwrapped, eval_data, settings, evaluation.classes, output_dir / "predictions", options.num_overlays)
        evaluated = write_outputs(unwrapped, eval_data, settings, evaluation, output_dir / "evaluation",
                                  model_name=str(model_dir), dataset_name=dataset, worst_images=options.num_overlays,
                                  label_map=eval_data.label_map, do_reduce_labels=options.do_reduce_labels)  # fmt: skip
    accelerator.print(f"Evaluation report ({headline(evaluated)}): {output_dir / 'evaluation' / REPORT_FILE}")
    numbers = {k: v for k, v in results.items() if k.startswith("eval_") and isinstance(v, (int, float))}
    card_metrics = {k: round(v, 4) for k, v in numbers.items() if not math.isnan(v)}  # no absent-class lists
    write_model_card(
        model_dir,
        unwrapped.config,
        source=None if is_variant(options.model) else options.model,
        dataset=dataset,
        metrics={"mean_iou": card_metrics.pop("eval_mean_iou"), **card_metrics},
        license=options.license,
        repo_id=options.push_to_hub or str(model_dir),
        hyperparameters=hyperparameters(options),
        prediction_image=pictures[0] if pictures else None,
        training_curves=curves,
        eval_results=eval_results(evaluated),
    )
    if options.push_to_hub:
        url = push_to_hub(model_dir, options.push_to_hub, private=options.private, token=options.token)
        accelerator.print(f"Uploaded {model_dir} to {url}")
