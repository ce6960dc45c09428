"""What a pretraining run leaves: OUTPUT_DIR/model (and model_ema) ready for `from_pretrained` and
`segformer train --model`, all_results.json, the curves as a picture, and a model card with the recipe
and the numbers, uploaded with --push-to-hub."""

from __future__ import annotations

import json
from pathlib import Path

from ..train.reporting import save_model

RECIPE_KEYS = ("model", "drop_path_rate", "image_size", "crop_scale", "eval_crop_ratio", "flip_prob", "randaugment_ops",
               "randaugment_magnitude", "random_erasing", "mixup", "cutmix", "mixup_switch_prob", "label_smoothing",
               "weight_decay", "warmup_learning_rate", "min_learning_rate", "batch_size", "gradient_accumulation_steps",
               "max_grad_norm", "ema_decay", "mixed_precision", "seed")  # fmt: skip


def plot_curves(history: dict, path: Path):
    """The training loss (soft-target cross-entropy) and the validation top-1 / top-5 against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    if history["loss"]:
        loss_axis.plot(*zip(*history["loss"]), color="tab:red")
    loss_axis.set(title="training loss", xlabel="step", ylabel="cross-entropy (mixed, smoothed targets)")
    loss_axis.grid(alpha=0.3)
    for key, label, colour in (("top1", "top-1", "tab:blue"), ("top5", "top-5", "tab:green"), ("ema_top1", "EMA top-1", "tab:purple")):
        if history.get(key):
            accuracy_axis.plot(*zip(*history[key]), marker="o", color=colour, label=label)
    accuracy_axis.set(title="validation accuracy", xlabel="step", ylabel="accuracy", ylim=(0, 1))
    accuracy_axis.grid(alpha=0.3)
    accuracy_axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def recipe(options, learning_rate: float, max_steps: int, warmup_steps: int) -> dict:
    """The settings a reader of the card needs to reproduce the run, with the values the run resolved."""
    values = {key: getattr(options, key) for key in RECIPE_KEYS if getattr(options, key) is not None}
    values.update(learning_rate=learning_rate, max_steps=max_steps, warmup_steps=warmup_steps)
    return values


def finish(accelerator, model, ema, processor, options, dataset_name: str, results: dict, history: dict, hyperparameters: dict):
    """Writes the model folders, all_results.json, the curves and the card; uploads with --push-to-hub."""
    from huggingface_hub import EvalResult

    from ..hub import push_to_hub, write_model_card

    output_dir = Path(options.output_dir)
    model_dir = output_dir / "model"
    save_model(accelerator, model, processor, model_dir)
    if ema is not None:
        save_model(accelerator, ema.model, processor, output_dir / "model_ema")
    if not accelerator.is_main_process:
        return
    (output_dir / "all_results.json").write_text(json.dumps(results, indent=2))
    curves = output_dir / "training_curves.png"
    plot_curves(history, curves)
    metrics = {"top1_accuracy": round(results["eval_top1"], 4), "top5_accuracy": round(results["eval_top5"], 4)}
    if "eval_ema_top1" in results:
        metrics["ema_top1_accuracy"] = round(results["eval_ema_top1"], 4)
    evaluated = [EvalResult(task_type="image-classification", dataset_type=dataset_name, dataset_name=dataset_name,
                            metric_type="accuracy", metric_name="top-1 accuracy", metric_value=metrics["top1_accuracy"])]  # fmt: skip
    write_model_card(
        model_dir,
        accelerator.unwrap_model(model).config,
        dataset=dataset_name,
        metrics=metrics,
        license=options.license,
        repo_id=options.push_to_hub or str(model_dir),
        hyperparameters=hyperparameters,
        training_curves=curves,
        eval_results=evaluated,
        tags=["image-classification", "pretraining"],
    )
    if options.push_to_hub:
        url = push_to_hub(model_dir, options.push_to_hub, private=options.private, token=options.token)
        accelerator.print(f"Uploaded {model_dir} to {url}")
